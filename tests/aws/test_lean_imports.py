"""The aws block controller imports neither the lab, the benchmarks nor rich (issue 15, item 6)."""

from __future__ import annotations

from pathlib import Path

from tests.aws.support import ZONE_A
from tests.lean import NEVER_SERVED, present, serve_imports


def test_aws_block_controller_imports_no_tools(aws_env: dict[str, str], aws_work: Path, cluster: str) -> None:
    names = serve_imports(aws_work, ["--driver", "block", "--mode", "controller", "--provider", "aws",
                                     "--zones", ZONE_A, "--cluster-id", cluster], env=aws_env)
    assert present(names, NEVER_SERVED) == []
    assert "botocore" in names and "elastivol.providers.aws.controller.ebs" in names
