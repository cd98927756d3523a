#!/usr/bin/env python3
"""Regenerate elastivol's trimmed EC2 API model from botocore's full one.

botocore's EC2 model describes ~700 operations; parsed, it holds about 25 MiB in every process that
makes an EC2 client. elastivol calls a dozen of them. This script keeps only the operations named in
the aws provider's sources (any string literal, or snake_case client method, that names an EC2
operation) and the shapes they reach, and writes the result where the client construction looks
first (``elastivol/providers/aws/botodata/ec2/<api-version>/service-2.json``)::

    .venv/bin/python scripts/trim_ec2_model.py           # rewrite the shipped model
    .venv/bin/python scripts/trim_ec2_model.py --check   # exit 1 if it is stale

Run it after adding an EC2 call or upgrading botocore; tests/aws/test_trimmed_model.py fails until then.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "src" / "elastivol" / "providers" / "aws"
DATA = SOURCES / "botodata"
SERVICE = "ec2"


def full_model() -> tuple[str, dict[str, Any]]:
    import botocore.loaders

    loader = botocore.loaders.create_loader()  # botocore's own search path only
    version = loader.determine_latest_version(SERVICE, "service-2")
    return version, loader.load_service_model(SERVICE, "service-2", version)


def called_operations(operations: set[str], sources: Path = SOURCES) -> set[str]:
    """The operations of ``operations`` that the sources name: as a string literal ("CreateVolume") or as a
    client method (``ec2.create_volume``)."""
    from botocore import xform_name

    by_method = {xform_name(op): op for op in operations}
    found: set[str] = set()
    for path in sources.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in operations:
                found.add(node.value)
            elif isinstance(node, ast.Attribute) and node.attr in by_method:
                found.add(by_method[node.attr])
    return found


def trim(model: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    shapes: dict[str, Any] = model["shapes"]
    needed: set[str] = set()

    def reach(name: str) -> None:
        if name in needed:
            return
        needed.add(name)
        shape = shapes[name]
        for ref in [*shape.get("members", {}).values(), shape.get("member"), shape.get("key"), shape.get("value")]:
            if ref:
                reach(ref["shape"])

    operations = {name: op for name, op in model["operations"].items() if name in keep}
    for op in operations.values():
        for ref in [op.get("input"), op.get("output"), *op.get("errors", [])]:
            if ref:
                reach(ref["shape"])
    return {**model, "operations": operations, "shapes": {n: s for n, s in shapes.items() if n in needed}}


def render() -> tuple[Path, str]:
    version, model = full_model()
    keep = called_operations(set(model["operations"]))
    text = json.dumps(trim(model, keep), indent=None, separators=(",", ":"), sort_keys=True) + "\n"
    return DATA / SERVICE / version / "service-2.json", text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped model is stale")
    args = parser.parse_args()
    path, text = render()
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is stale: run scripts/trim_ec2_model.py", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
