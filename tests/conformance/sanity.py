"""Running the community's conformance suite (kubernetes-csi/csi-test's `csi-sanity`) and reading its verdict.

The binary is not part of elastivol: it is taken from ``$CSI_SANITY`` or ``../shared/tools/csi-sanity``
(relative to the repository root), and a test that finds neither skips and says where it looked.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ENV = "CSI_SANITY"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT.parent / "shared" / "tools" / "csi-sanity"
GiB = 1 << 30

# Ginkgo's last line: "SUCCESS! -- 76 Passed | 0 Failed | 1 Pending | 18 Skipped" (or "FAIL! -- ...").
_SUMMARY = re.compile(r"(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped")
_RAN = re.compile(r"Ran (\d+) of (\d+) Specs")
_FAILED_SPEC = re.compile(r"^\s*\[FAIL\] (.+)$", re.MULTILINE)
# Each failed spec's report, from its "• [FAILED]" line to Ginkgo's next separator.
_FAILED_REPORT = re.compile(r"^• \[FAILED\].*?(?=^-{20,}$)", re.MULTILINE | re.DOTALL)


def binary() -> Path | None:
    """The csi-sanity to run, or None when there is none (the caller skips)."""
    given = os.environ.get(ENV, "").strip()
    path = Path(given) if given else DEFAULT
    return path if path.is_file() and os.access(path, os.X_OK) else None


def where_looked() -> str:
    given = os.environ.get(ENV, "").strip()
    return f"${ENV}={given}" if given else f"{DEFAULT} (set ${ENV} to use another)"


@dataclass
class Result:
    passed: int
    failed: int
    pending: int
    skipped: int
    ran: int
    total: int
    seconds: float
    failures: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    output: str = ""

    def summary(self) -> str:
        return (f"{self.passed} passed | {self.failed} failed | {self.pending} pending | {self.skipped} skipped "
                f"(ran {self.ran} of {self.total} specs in {self.seconds:.1f}s)")


def parse(output: str, seconds: float = 0.0) -> Result:
    """Read Ginkgo's summary; an output without one (a crash, a usage error) is an error, not a pass."""
    found = _SUMMARY.findall(output)
    if not found:
        tail = "\n".join(output.splitlines()[-30:])
        raise AssertionError(f"csi-sanity printed no 'N Passed | N Failed' summary; its output ends with:\n{tail}")
    passed, failed, pending, skipped = (int(n) for n in found[-1])
    ran = _RAN.findall(output)
    ran_n, total = (int(n) for n in ran[-1]) if ran else (0, 0)
    failures = _FAILED_SPEC.findall(output.split("Summarizing", 1)[-1]) if "Summarizing" in output else []
    return Result(passed, failed, pending, skipped, ran_n, total, seconds, failures, [_short(r) for r in _FAILED_REPORT.findall(output)], output)


def _short(report: str, lines: int = 25) -> str:
    kept = report.strip().splitlines()
    return "\n".join(kept[:lines] + ([f"... ({len(kept) - lines} more lines)"] if len(kept) > lines else []))


def skip_pattern(name: str) -> str:
    """A --ginkgo.skip regular expression that matches one spec by its (partial) text."""
    return re.escape(name)


def run(
    exe: Path,
    work: Path,
    *,
    node: str,
    controller: str,
    access_type: str = "mount",
    parameters: Mapping[str, str] | None = None,
    skips: Mapping[str, str] | None = None,
    size: int = 1 * GiB,
    expand_size: int = 2 * GiB,
    extra: Sequence[str] = (),
    timeout: float = 600.0,
) -> Result:
    """One csi-sanity run against a node endpoint and a controller endpoint (unix socket paths).

    ``skips`` maps a spec's name to the reason it cannot pass here; each becomes a --ginkgo.skip.
    The full output is kept in ``work/csi-sanity.log`` for whoever reads a failure.
    """
    work.mkdir(parents=True, exist_ok=True)
    argv = [
        str(exe),
        "--csi.endpoint", _socket_path(node),
        "--csi.controllerendpoint", _socket_path(controller),
        "--csi.stagingdir", str(work / "staging"),
        "--csi.mountdir", str(work / "target"),
        "--csi.testvolumesize", str(size),
        "--csi.testvolumeexpandsize", str(expand_size),
        "--csi.testvolumeaccesstype", access_type,
        "--ginkgo.no-color",
        # A spec that hangs fails on its own instead of eating the whole run's timeout.
        "--ginkgo.timeout", f"{int(timeout)}s",
    ]
    if parameters:
        params_file = work / "parameters.yaml"
        params_file.write_text(yaml.safe_dump(dict(parameters)))
        argv += ["--csi.testvolumeparameters", str(params_file)]
    for name in skips or {}:
        argv += ["--ginkgo.skip", skip_pattern(name)]
    argv += list(extra)
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 60, cwd=work,
                          env={**os.environ, "GINKGO_NO_COLOR": "TRUE"})
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    (work / "csi-sanity.log").write_text(" ".join(argv) + "\n\n" + output)
    result = parse(output, seconds)
    # Ginkgo exits non-zero exactly when a spec failed; anything else is a mis-run.
    if proc.returncode != 0 and result.failed == 0:
        raise AssertionError(f"csi-sanity exited {proc.returncode} with no failed spec; see {work / 'csi-sanity.log'}")
    return result


def _socket_path(endpoint: str) -> str:
    return endpoint.removeprefix("unix://")
