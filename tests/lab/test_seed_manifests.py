"""examples/12-seeds-as-written holds the seeds' manifests unchanged: each file is the seed's lines
that its first comment names, with only the driver names and the EFS id substituted.

The seeds are the study notes in ../shared/seeds (next to the repository, as the reference tools are).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT.parent / "shared" / "seeds"
EXAMPLE = ROOT / "examples" / "12-seeds-as-written"
HEADER = re.compile(r"# seed: (\d{3}) lines (\d+)-(\d+)\. ")
FILES = sorted(EXAMPLE.rglob("*.yaml"))


def as_applied(seed_text: str) -> str:
    """The substitutions the README allows: driver names, the EFS id, and the heredoc's \\$ escape."""
    drivers = {"ebs": "block.csi.elastivol.io", "efs": "file.csi.elastivol.io"}
    # Only where a driver is named (provisioner:, csi.driver:); EBS's topology key stays the seed's.
    text = re.sub(r"\b(provisioner|driver): (ebs|efs)\.csi\.aws\.com\b",
                  lambda m: f"{m.group(1)}: {drivers[m.group(2)]}", seed_text)
    text = re.sub(r"\bfs-[0-9a-f]{8,17}\b", "LAB_FILE_SYSTEM_ID", text).replace("${fs_id}", "LAB_FILE_SYSTEM_ID")
    return text.replace("\\$", "$")


def test_the_example_has_the_seeds_manifests() -> None:
    assert {f.relative_to(EXAMPLE).parts[0] for f in FILES} == {
        "000-gp3", "000-rwo", "000-efs-pv", "001-static", "001-dynamic", "003-efs-sc"}


@pytest.mark.skipif(not SEEDS.is_dir(), reason=f"the seeds are not at {SEEDS}")
@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(EXAMPLE)) for f in FILES])
def test_a_seed_manifest_is_the_seeds_text(path: Path) -> None:
    lines = path.read_text().splitlines()
    m = HEADER.match(lines[0])
    assert m, f"{path}: the first line must say `# seed: NNN lines A-B. ...`"
    seed, first, last = m.group(1), int(m.group(2)), int(m.group(3))
    (seed_file,) = SEEDS.glob(f"{seed}_*.txt")
    expected = as_applied("\n".join(seed_file.read_text().splitlines()[first - 1:last]))
    body = lines[next(i for i, line in enumerate(lines) if not line.startswith("#")):]
    assert "\n".join(body) == expected
    # The substitutions changed only names: the same YAML keys, line for line.
    assert len(body) == last - first + 1
