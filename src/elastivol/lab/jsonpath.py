"""kubectl's JSONPath templates (`-o jsonpath=...`, `wait --for=jsonpath=...`) over the lab's objects."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from elastivol.lab.printers import Obj, _scalar, _strip

# ---------------------------------------------------------------- JSONPath

Step = tuple[str, Any]  # ("key", name) | ("index", n) | ("slice", slice) | ("all", None) | ("filter", (...))
Node = tuple[str, Any]  # ("text", str) | ("path", steps) | ("range", (steps, body))
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b), "<": lambda a, b: bool(a < b),
    ">": lambda a, b: bool(a > b), "<=": lambda a, b: bool(a <= b), ">=": lambda a, b: bool(a >= b)}
_FILTER = re.compile(r"\?\(\s*(@[^=!<>\s]*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)")


def _closing(s: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the close_ch matching s[i] == open_ch, skipping quoted text; ValueError if none."""
    depth, quote, j = 0, "", i
    while j < len(s):
        ch = s[j]
        if quote:
            j += ch == "\\"
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in (open_ch, close_ch):
            depth += 1 if ch == open_ch else -1
            if depth == 0:
                return j
        j += 1
    raise ValueError(f"JSONPath: unclosed {open_ch!r} in {s!r}")


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return json.loads(text) if text[0] == '"' else text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    except ValueError:
        raise ValueError(f"JSONPath: unsupported literal {text!r}") from None


def _bracket(inner: str, src: str) -> Step:
    inner = inner.strip()
    if inner == "*":
        return ("all", None)
    if re.fullmatch(r"-?\d+", inner):
        return ("index", int(inner))
    if m := re.fullmatch(r"(-?\d*):(-?\d*)(?::(\d+))?", inner):
        return ("slice", slice(*(int(g) if g else None for g in m.groups())))
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
        return ("key", _literal(inner))
    if m := _FILTER.fullmatch(inner):
        left, op, right = m.groups()
        return ("filter", (_path(left), op, None if op is None else _literal(right)))
    raise ValueError(f"JSONPath: unsupported subscript [{inner}] in {src!r}")


def _path(src: str) -> list[Step]:
    s = src.strip()
    s = s[1:] if s[:1] in ("$", "@") else s
    if s in ("", "."):
        return []
    s = s if s[0] in ".[" else "." + s
    steps: list[Step] = []
    i = 0
    while i < len(s):
        if s.startswith("..", i):
            raise ValueError(f"JSONPath: recursive descent '..' is not supported: {src!r}")
        if s[i] == "[":
            j = _closing(s, i, "[", "]")
            steps.append(_bracket(s[i + 1:j], src))
            i = j + 1
            continue
        if s[i] != ".":
            raise ValueError(f"JSONPath: unexpected {s[i]!r} in {src!r}")
        i += 1
        if s.startswith("*", i):
            steps.append(("all", None))
            i += 1
            continue
        name: list[str] = []
        while i < len(s) and s[i] not in ".[":
            if s[i] == "\\" and i + 1 < len(s):
                i += 1
            elif s[i].isspace() or s[i] in "]()=!<>\"'{}":
                raise ValueError(f"JSONPath: unsupported syntax {src!r}")
            name.append(s[i])
            i += 1
        if not name:
            raise ValueError(f"JSONPath: empty field name in {src!r}")
        steps.append(("key", "".join(name)))
    return steps


def _evaluate(steps: list[Step], roots: list[Any]) -> list[Any]:
    cur = roots
    for kind, arg in steps:
        nxt: list[Any] = []
        for v in cur:
            if kind == "key" and isinstance(v, dict) and arg in v:
                nxt.append(v[arg])
            elif kind == "index" and isinstance(v, list) and -len(v) <= arg < len(v):
                nxt.append(v[arg])
            elif kind == "slice" and isinstance(v, list):
                nxt.extend(v[arg])
            elif kind == "all" and isinstance(v, list | dict):
                nxt.extend(v if isinstance(v, list) else (v[k] for k in sorted(v)))
            elif kind == "filter" and isinstance(v, list):
                nxt.extend(x for x in v if _matches(x, *arg))
        cur = nxt
    return cur


def _matches(item: Any, left: list[Step], op: str | None, right: Any) -> bool:
    found = _evaluate(left, [item])
    if op is None:
        return bool(found)
    for value in found:
        try:
            if isinstance(value, bool) == isinstance(right, bool) and _OPS[op](value, right):
                return True
        except TypeError:
            continue
    return False


def _template(expr: str) -> list[Node]:
    stack: list[tuple[list[Step], list[Node]]] = []
    nodes: list[Node] = []
    i = 0
    while i < len(expr):
        start, close = expr.find("{", i), expr.find("}", i)
        if close != -1 and (start == -1 or close < start):
            raise ValueError(f"JSONPath: unmatched '}}' in {expr!r}")
        if start == -1:
            nodes.append(("text", expr[i:]))
            break
        if start > i:
            nodes.append(("text", expr[i:start]))
        end = _closing(expr, start, "{", "}")
        action, i = expr[start + 1:end].strip(), end + 1
        if action[:1] in ("'", '"'):
            nodes.append(("text", str(_literal(action))))
        elif action == "end":
            if not stack:
                raise ValueError(f"JSONPath: {{end}} without {{range}} in {expr!r}")
            steps, outer = stack.pop()
            outer.append(("range", (steps, nodes)))
            nodes = outer
        elif action.split(None, 1)[:1] == ["range"]:
            stack.append((_path(action[5:]), nodes))
            nodes = []
        elif not action:
            raise ValueError(f"JSONPath: empty expression in {expr!r}")
        else:
            nodes.append(("path", _path(action)))
    if stack:
        raise ValueError(f"JSONPath: {{range}} without {{end}} in {expr!r}")
    return nodes


def _render(nodes: list[Node], root: Any) -> str:
    out: list[str] = []
    for kind, arg in nodes:
        if kind == "text":
            out.append(arg)
        elif kind == "path":
            out.append(" ".join(_scalar(v) for v in _evaluate(arg, [root])))
        else:
            out.extend(_render(arg[1], item) for item in _evaluate(arg[0], [root]))
    return "".join(out)


def jsonpath(obj: Obj, expr: str) -> str:
    """Evaluate a kubectl-style JSONPath template against obj (private keys are invisible).

    Supports {.a.b}, {$.a}, [N], [a:b], [*], .*, ['key'], escaped dots in keys (a\\.b), filters
    [?(@.x=="v")] with == != < > <= >= or bare existence, {range ...}{end}, {"literal"}, and text
    outside braces copied as is. Several results are joined by a space; a missing field gives "".
    Anything else raises ValueError."""
    return _render(_template(expr), _strip(obj))
