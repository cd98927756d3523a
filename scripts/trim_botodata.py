#!/usr/bin/env python3
"""Regenerate elastivol's trimmed botocore data: the EC2 API model and endpoints.json.

botocore's EC2 model describes ~700 operations; parsed, it holds about 25 MiB in every process that
makes an EC2 client. elastivol calls a dozen of them. This script keeps only the operations named in
the aws provider's sources (any string literal, or snake_case client method, that names an EC2
operation) and the shapes they reach. botocore's endpoints.json lists every AWS service in every
partition (1.2 MB of JSON, ~4.5 MiB parsed, loaded by every session); the trimmed copy keeps every
partition and region but only the services elastivol's clients and credential providers talk to
(``ENDPOINT_SERVICES``). Both are written where the client construction looks first
(``elastivol/providers/aws/botodata/``)::

    .venv/bin/python scripts/trim_botodata.py           # rewrite the shipped files
    .venv/bin/python scripts/trim_botodata.py --check   # exit 1 if one is stale

Run it after adding an EC2 call, a client of another service, or upgrading botocore;
tests/aws/test_trimmed_botodata.py fails until then.
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
# Clients elastivol makes (ec2, efs) and those botocore's credential chain may make for it: sts
# (IRSA's web identity, assume-role), sso and sso-oidc (SSO profiles).
ENDPOINT_SERVICES = ("ec2", "efs", "sts", "sso", "sso-oidc")


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


def trim_endpoints(endpoints: dict[str, Any], prefixes: set[str]) -> dict[str, Any]:
    """``endpoints`` with each partition's services cut down to ``prefixes`` (endpoint prefixes)."""
    partitions = [{**p, "services": {k: v for k, v in p["services"].items() if k in prefixes}}
                  for p in endpoints["partitions"]]
    return {**endpoints, "partitions": partitions}


def endpoint_prefixes() -> set[str]:
    import botocore.loaders

    loader = botocore.loaders.create_loader()
    return {loader.load_service_model(name, "service-2")["metadata"]["endpointPrefix"] for name in ENDPOINT_SERVICES}


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=None, separators=(",", ":"), sort_keys=True) + "\n"


def render_all() -> list[tuple[Path, str]]:
    """Each shipped file and the text it should hold."""
    import botocore.loaders

    version, model = full_model()
    keep = called_operations(set(model["operations"]))
    endpoints = botocore.loaders.create_loader().load_data("endpoints")
    return [
        (DATA / SERVICE / version / "service-2.json", _dump(trim(model, keep))),
        (DATA / "endpoints.json", _dump(trim_endpoints(endpoints, endpoint_prefixes()))),
    ]


def render() -> tuple[Path, str]:
    """The trimmed EC2 model's path and text."""
    return render_all()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a shipped file is stale")
    args = parser.parse_args()
    stale = 0
    for path, text in render_all():
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is stale: run scripts/trim_botodata.py", file=sys.stderr)
                stale = 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)} ({len(text)} bytes)")
    return stale


if __name__ == "__main__":
    sys.exit(main())
