"""Secret values never reach a log line: not in the message, the fields, nor a traceback."""

from __future__ import annotations

import io
import logging
import uuid

import pytest

from elastivol import logs
from elastivol.errors import Internal
from elastivol.grpc_errors import status_for


def _secret() -> tuple[str, str]:
    """A secret, and a unique part of it that any spelling of it (raw, repr'd, JSON-escaped, or
    all of these nested) still shows. A quote, a backslash and a non-ASCII letter make the
    spellings differ from the raw value."""
    mark = uuid.uuid4().hex
    return f"tok-{mark}-it's\\a-\"sécret\"", mark


def _fail(secret: str) -> None:
    credentials = {"token": secret}
    try:
        raise KeyError(f"the backend echoed {credentials!r}")
    except KeyError as exc:
        raise Internal(f"call failed with token={secret}") from exc


@pytest.mark.parametrize("formatter", [logs.JsonFormatter(), logs.TextFormatter()], ids=["json", "text"])
def test_a_traceback_never_carries_a_known_secret(formatter: logging.Formatter) -> None:
    secret, mark = _secret()
    logs.remember_secrets([secret])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(logs.SecretFilter())
    log = logging.getLogger(f"test.secrets.{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.propagate = False
    try:
        _fail(secret)
    except Internal:
        log.exception("internal error in %s", "CreateVolume", extra={"fields": {"secret": secret}})
    log.error("stack for %s", secret, stack_info=True)
    text = out.getvalue()
    assert "Traceback" in text and "KeyError" in text and "Internal" in text, text  # the traceback stays
    # The field, both exception texts, the second record's message.
    assert text.count(logs.REDACTED) >= 4, text
    assert mark not in text, f"the secret leaked in some spelling:\n{text}"


def test_the_status_message_a_client_sees_is_scrubbed_too() -> None:
    secret, mark = _secret()
    logs.remember_secrets([secret])
    _code, message = status_for(Internal(f"AWS said: bad token {secret}"))
    assert mark not in message and message.endswith("bad token ***")
