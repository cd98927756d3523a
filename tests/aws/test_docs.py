"""The README's IAM policies name exactly the actions the code calls (and the tags it needs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ROOT / "src" / "elastivol" / "providers" / "aws"
DOC = ROOT / "README.md"
_CALL = re.compile(r'(?:call(?:_delete)?\(\s*self\.(?:ec2|efs)\s*,\s*|pages\(\s*|_create\(\s*spec\s*,\s*)"([A-Z][A-Za-z]+)"')
_METHOD = re.compile(r"self\.(?:ec2|efs)\.([a-z_]+)\(")


def called() -> dict[str, set[str]]:
    """API operations per IAM prefix, found in the provider's source."""
    found: dict[str, set[str]] = {"ec2": set(), "elasticfilesystem": set()}
    for path in CODE.rglob("*.py"):
        text = path.read_text()
        prefix = "elasticfilesystem" if path.name.startswith("efs") else "ec2"
        found[prefix] |= set(_CALL.findall(text))
        found[prefix] |= {"".join(w.title() for w in m.split("_")) for m in _METHOD.findall(text)}
    return found


def policy(heading: str) -> set[str]:
    text = DOC.read_text()
    section = text[text.index(heading):]
    block = section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)]
    actions: set[str] = set()
    for statement in json.loads(block)["Statement"]:
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def test_block_policy_matches_the_code() -> None:
    expected = {f"ec2:{op}" for op in called()["ec2"]} | {"ec2:CreateTags"}  # tag-on-create
    assert policy("### Block driver controller (EBS)") == expected


def test_file_policy_matches_the_code() -> None:
    assert policy("### File driver controller (EFS)") == {f"elasticfilesystem:{op}" for op in called()["elasticfilesystem"]}
