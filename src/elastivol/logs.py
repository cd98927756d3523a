"""Structured logging. Secrets never reach a handler: requests are redacted before logging,
and a filter scrubs any secret value the process has been told about, from the message, the
fields and the traceback alike; the formatters scrub what they finally write once more."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

_known_secrets: set[str] = set()
_forms: tuple[str, ...] = ()  # every spelling of every known secret, longest first
_secrets_lock = threading.Lock()
REDACTED = "***"


def remember_secrets(values: Any) -> None:
    """Register secret values (e.g. from a request's secrets map) so no log line can carry them."""
    global _forms
    with _secrets_lock:
        new = {v for v in values if isinstance(v, str) and len(v) >= 4} - _known_secrets
        if new:
            _known_secrets.update(new)
            # Longest first, so that a secret containing another is replaced whole.
            _forms = tuple(sorted({f for s in _known_secrets for f in _spellings(s)}, key=len, reverse=True))


def _escaped(text: str) -> set[str]:
    """``text`` as it reads inside a Python string literal (either quote) or a JSON string."""
    slashed = text.replace("\\", "\\\\")
    return {
        repr(text)[1:-1],
        slashed.replace("'", "\\'"),
        slashed.replace('"', '\\"'),
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
    }


def _spellings(secret: str, depth: int = 3) -> set[str]:
    """The ways a secret can appear in text: as it is, and escaped once or more (a traceback
    shows an exception's repr of a message that holds a repr of a dict that holds the secret;
    the JSON log line escapes all of that once more)."""
    found, layer = {secret}, {secret}
    for _ in range(depth):
        layer = {e for t in layer for e in _escaped(t)} - found
        found |= layer
    return found


def scrub(text: str) -> str:
    for form in _forms:  # one tuple, replaced whole when a secret is added: no lock needed to read
        if form in text:
            text = text.replace(form, REDACTED)
    return text


_TRACEBACKS = logging.Formatter()


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _known_secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict):
                record.fields = json.loads(scrub(json.dumps(fields, default=str)))
            # A traceback carries the exception's text and its causes' (say, an API error that
            # echoed a token): format it here, scrubbed, so no handler formats the raw one.
            if record.exc_info:
                record.exc_text = _TRACEBACKS.formatException(record.exc_info)
                record.exc_info = None
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = scrub(record.stack_info)
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or ""


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
        exc = _exception_text(self, record)
        if exc:
            entry["exc"] = exc
        if record.stack_info:
            entry["stack"] = record.stack_info
        return scrub(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname[0]} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items() if k != "request")
        exc = _exception_text(self, record)
        if exc:
            base += "\n" + exc
        if record.stack_info:
            base += "\n" + record.stack_info
        return scrub(base)


def setup(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.WARNING)
