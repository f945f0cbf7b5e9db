"""One JSON object per log line (``xmr --log-format json ...``), for log shippers that index fields.

Every line has ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger`` and ``message``; the fields a call
passes with ``extra={...}`` (for example the server's per-call ``rpc``, ``model``, ``code``, ``ms`` and
``request_id``) become fields of their own, and an exception its formatted traceback under ``exc``.
"""

from __future__ import annotations

import json
import logging
import time

# the attributes every LogRecord has; anything else on a record came from ``extra``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out = {"ts": ts, "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)
