"""Structured logging. Secrets never reach a handler: requests are redacted before logging,
and a filter scrubs any secret value the process has been told about."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

_known_secrets: set[str] = set()
_secrets_lock = threading.Lock()
REDACTED = "***"


def remember_secrets(values: Any) -> None:
    """Register secret values (e.g. from a request's secrets map) so no log line can carry them."""
    with _secrets_lock:
        for v in values:
            if isinstance(v, str) and len(v) >= 4:
                _known_secrets.add(v)


def scrub(text: str) -> str:
    with _secrets_lock:
        secrets = list(_known_secrets)
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _known_secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict):
                record.fields = json.loads(scrub(json.dumps(fields, default=str)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname[0]} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items() if k != "request")
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.WARNING)
