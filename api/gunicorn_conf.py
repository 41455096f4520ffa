"""gunicorn settings of the Procfile's web command (`--config python:api.gunicorn_conf`).

Once a worker has built its app, two things are done at once rather than in its first burst of
traffic, when every core is busy:
- its database pool's connections are opened (`Database.warm`): before, bench/calls.py runs
  opened 20-45 PostgreSQL connections during the calls, each a backend forked while every core
  was busy;
- what it built (about 200,000 objects: Flask, SQLAlchemy, the SDKs) is taken out of the cyclic
  collector's sight with `gc.freeze()`, so a full collection scans what requests allocate
  instead; before, each one stopped the worker for about 225 ms, every request it held waiting.
See https://docs.python.org/3/library/gc.html#gc.freeze and
https://docs.gunicorn.org/en/stable/settings.html#post-worker-init
"""

from __future__ import annotations

import gc
from typing import Any

from api.extension import EXTENSION
from payments.services import Services


def post_worker_init(worker: Any) -> None:
    """The worker has loaded its app (`worker.wsgi`): everything alive now stays for its life."""
    services: Services | None = getattr(worker.wsgi, "extensions", {}).get(EXTENSION)
    if services is not None:  # another app under these settings (the bench's bare endpoint)
        services.db.warm()
    gc.freeze()
