"""gunicorn's logger with the card-number redaction every other log line gets.

The Procfile's web process names it (`--logger-class api.gunicorn_log.RedactingLogger`), so its
access log, which carries each request's URL and query string, and its error log are masked by
`payments.logs.RedactCardNumbers` before they are written.
See https://docs.gunicorn.org/en/stable/settings.html#logger-class
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from payments.logs import RedactCardNumbers


class RedactingLogger(Logger):
    def setup(self, cfg: Any) -> None:
        """Called at start and on every reload: filter both loggers, once each."""
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactCardNumbers) for f in log.filters):
                log.addFilter(RedactCardNumbers())
