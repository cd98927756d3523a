"""`elastivol lab logs --since DURATION`, with kubectl's durations, against a real lab pod."""

from __future__ import annotations

import time
from pathlib import Path

from tests.lab.conftest import lab

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: clock
spec:
  containers:
  - name: clock
    image: busybox
    command: ["/bin/sh", "-c", "while true; do date +%s.%N; sleep 0.3; done"]
"""


def _times(output: str) -> list[float]:
    return [float(line) for line in output.split()]


def test_logs_since_keeps_only_the_recent_output(lab_dir: Path) -> None:
    lab(lab_dir, "apply", "-f", "-", input=POD, check=True)
    lab(lab_dir, "wait", "pod/clock", "--for=jsonpath={.status.phase}=Running", "--timeout", "1m", check=True)
    deadline = time.monotonic() + 60
    while len(_times(lab(lab_dir, "logs", "clock").stdout)) < 15 and time.monotonic() < deadline:
        time.sleep(0.5)
    everything = _times(lab(lab_dir, "logs", "clock", check=True).stdout)
    assert len(everything) >= 15, everything
    asked = time.time()
    recent = _times(lab(lab_dir, "logs", "clock", "--since", "2s", check=True).stdout)
    assert recent, "the pod writes every 0.3 s: the last 2 s are not empty"
    assert len(recent) < len(everything)
    # Each line is a time the pod printed: none older than 2 s (plus the 0.3 s a line may wait in a pipe).
    assert min(recent) >= asked - 2.5, (asked, recent[:3])
    assert _times(lab(lab_dir, "logs", "clock", "--since", "1h", check=True).stdout)[:len(everything)] == everything
    assert len(_times(lab(lab_dir, "logs", "clock", "--since", "1m30s", check=True).stdout)) >= len(everything)
    bad = lab(lab_dir, "logs", "clock", "--since", "2x")
    assert bad.returncode == 2 and "'2x' is not a duration; write e.g. 120s" in bad.stderr, bad.stderr
