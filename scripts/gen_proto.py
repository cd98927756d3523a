#!/usr/bin/env python3
"""Generate elastivol's Python gRPC stubs from proto/csi.proto.

How to regenerate (the ``proto`` target of the Makefile runs exactly this)::

    .venv/bin/python scripts/gen_proto.py            # writes src/elastivol/csi/
    .venv/bin/python scripts/gen_proto.py OUT_DIR    # writes elsewhere (tests use a temp dir)
    .venv/bin/python scripts/gen_proto.py --check    # exit 1 if the committed stubs are stale

It runs grpcio-tools' bundled protoc in-process (an argv list, no shell) and
writes three files: ``csi_pb2.py``, ``csi_pb2.pyi`` and ``csi_pb2_grpc.py``.
protoc emits a top-level ``import csi_pb2 as csi__pb2`` in the gRPC module,
which only works when the output directory itself is on ``sys.path``; that one
line is rewritten to the package-qualified ``from elastivol.csi import csi_pb2
as csi__pb2``. Nothing else is touched, so the output is a pure function of the
.proto file and the pinned grpcio-tools version (see pyproject.toml).
``__init__.py`` and ``secrets.py`` in the package are hand-written and are
never written by this script.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO_FILE = PROTO_DIR / "csi.proto"
DEFAULT_OUT = ROOT / "src" / "elastivol" / "csi"
PACKAGE = "elastivol.csi"

GENERATED = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")

_BARE_IMPORT = re.compile(r"^import csi_pb2 as csi__pb2$", re.MULTILINE)


def _protoc_include() -> str:
    """Directory holding google/protobuf/*.proto as shipped inside grpcio-tools."""
    return str(importlib.resources.files("grpc_tools") / "_proto")


def _run_protoc(staging: Path) -> None:
    from grpc_tools import protoc  # imported late: only the generator needs grpcio-tools

    argv = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--proto_path={_protoc_include()}",
        f"--python_out={staging}",
        f"--pyi_out={staging}",
        f"--grpc_python_out={staging}",
        str(PROTO_FILE),
    ]
    rc = protoc.main(argv)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


def _fix_imports(name: str, text: str) -> str:
    if name != "csi_pb2_grpc.py":
        return text
    fixed, n = _BARE_IMPORT.subn(f"from {PACKAGE} import csi_pb2 as csi__pb2", text)
    if n != 1:
        raise SystemExit(f"{name}: expected exactly one 'import csi_pb2 as csi__pb2' line, found {n}")
    return fixed


def generate() -> dict[str, bytes]:
    """Run protoc and return the post-processed files by name."""
    with tempfile.TemporaryDirectory(prefix="elastivol-proto-") as tmp:
        staging = Path(tmp)
        _run_protoc(staging)
        out: dict[str, bytes] = {}
        for name in GENERATED:
            text = (staging / name).read_text(encoding="utf-8")
            out[name] = _fix_imports(name, text).encode("utf-8")
        return out


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in generate().items():
        path = out_dir / name
        path.write_bytes(data)
        written.append(path)
    return written


def stale(out_dir: Path) -> list[str]:
    """Names of generated files in out_dir that differ from a fresh generation."""
    return [
        name
        for name, data in generate().items()
        if not (out_dir / name).is_file() or (out_dir / name).read_bytes() != data
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT, help="where to write the stubs")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 when regeneration is needed"
    )
    args = parser.parse_args(argv)
    if args.check:
        diff = stale(args.out_dir)
        for name in diff:
            print(f"stale: {args.out_dir / name}", file=sys.stderr)
        return 1 if diff else 0
    for path in write(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
