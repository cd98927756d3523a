"""Redaction of CSI fields marked ``[(csi_secret) = true]``.

The spec requires that secret-bearing fields are never logged. ``redact``
turns any protobuf message into a JSON-ready dict (snake_case keys, as
``json_format.MessageToDict(..., preserving_proto_field_name=True)``) in which
every such field, at any depth, is replaced by ``"***"``:

* a secret map keeps its keys, every value becomes ``"***"``;
* a secret repeated field keeps its length, every element becomes ``"***"``;
* a secret singular field becomes ``"***"``.

Which fields are secret, and which nested messages can contain secret fields
at all, is worked out once per message type from the descriptor and cached,
so the per-call cost is one ``MessageToDict`` plus a walk over only the
branches that can hold secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from elastivol.csi import csi_pb2

REDACTED = "***"

__all__ = ["REDACTED", "has_secrets", "is_secret", "redact", "secret_field_paths"]


def is_secret(field: FieldDescriptor) -> bool:
    """True if the field carries the ``csi_secret`` option."""
    return bool(field.GetOptions().Extensions[csi_pb2.csi_secret])


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def _map_value(field: FieldDescriptor) -> FieldDescriptor:
    return field.message_type.fields_by_name["value"]


@dataclass(frozen=True)
class _Step:
    """How redaction treats one field of a message type."""

    name: str
    secret: bool
    repeated: bool
    is_map: bool
    # Descriptor to recurse into (the element / map-value message type) when
    # the field is not itself secret but may contain secrets; else None.
    child: Descriptor | None


def has_secrets(descriptor: Descriptor) -> bool:
    """True if a message of this type can contain a secret field anywhere."""
    return bool(_plan(descriptor))


@cache
def _plan(descriptor: Descriptor) -> tuple[_Step, ...]:
    """Fields of ``descriptor`` that redaction must visit (secret or secret-bearing)."""
    return _build_plan(descriptor, frozenset())


def _build_plan(descriptor: Descriptor, visiting: frozenset[str]) -> tuple[_Step, ...]:
    # ``visiting`` breaks cycles in self-referencing message types (CSI has none,
    # but the helper is generic): a type already on the stack adds nothing new.
    visiting = visiting | {descriptor.full_name}
    steps: list[_Step] = []
    for field in descriptor.fields:
        is_map = _is_map(field)
        target = _map_value(field) if is_map else field
        secret = is_secret(field)
        child: Descriptor | None = None
        if not secret and target.type == FieldDescriptor.TYPE_MESSAGE:
            sub = target.message_type
            if sub.full_name not in visiting and _build_plan(sub, visiting):
                child = sub
        if secret or child is not None:
            steps.append(_Step(field.name, secret, field.is_repeated and not is_map, is_map, child))
    return tuple(steps)


def secret_field_paths(descriptor: Descriptor) -> tuple[str, ...]:
    """Dotted paths of every secret field reachable from ``descriptor``.

    Repeated and map levels are marked ``[]`` and ``{}``, e.g.
    ``"secrets"`` for ``CreateVolumeRequest``.
    """
    out: list[str] = []

    def walk(desc: Descriptor, prefix: str) -> None:
        for step in _plan(desc):
            path = prefix + step.name
            if step.secret:
                out.append(path)
            elif step.child is not None:
                suffix = "{}" if step.is_map else "[]" if step.repeated else ""
                walk(step.child, path + suffix + ".")

    walk(descriptor, "")
    return tuple(out)


def _redact_secret_value(value: Any, step: _Step) -> Any:
    if step.is_map and isinstance(value, dict):
        return dict.fromkeys(value, REDACTED)
    if step.repeated and isinstance(value, list):
        return [REDACTED] * len(value)
    return REDACTED


def _redact_dict(data: dict[str, Any], descriptor: Descriptor) -> None:
    for step in _plan(descriptor):
        if step.name not in data:
            continue
        value = data[step.name]
        if step.secret:
            data[step.name] = _redact_secret_value(value, step)
            continue
        child = step.child
        if child is None:
            continue
        if step.is_map and isinstance(value, dict):
            items = value.values()
        elif step.repeated and isinstance(value, list):
            items = value
        else:
            items = [value]
        for item in items:
            if isinstance(item, dict):
                _redact_dict(item, child)


def redact(message: Message) -> dict[str, Any]:
    """Return ``message`` as a dict with every ``csi_secret`` field replaced by ``"***"``.

    Keys are the proto field names. Fields left at their default value are
    omitted, exactly as ``json_format.MessageToDict`` does.
    """
    # Imported here: requests are dumped only at debug level, and json_format (with text_format)
    # adds ~10 ms to every plugin's start.
    from google.protobuf import json_format

    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _redact_dict(data, message.DESCRIPTOR)
    return data
