"""gunicorn settings of the Procfile's web command (`--config python:api.gunicorn_conf`).

A worker's app, once built, lives as long as the worker. `gc.freeze()` takes those objects (about
200,000: Flask, SQLAlchemy, the SDKs) out of the cyclic collector's sight, so a full collection
scans what requests allocate instead. Measured on bench/calls.py before: each web worker stopped
for about 225 ms at every full collection, every request it held waiting with it.
See https://docs.python.org/3/library/gc.html#gc.freeze and
https://docs.gunicorn.org/en/stable/settings.html#post-worker-init
"""

from __future__ import annotations

import gc
from typing import Any


def post_worker_init(worker: Any) -> None:
    """The worker has built its app: everything alive now stays for its lifetime."""
    gc.freeze()
