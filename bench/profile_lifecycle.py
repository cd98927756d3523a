"""Where the driver's lifecycle time goes: py-spy samples the server during repeated xfs/ext4 lifecycles.

`python -m bench.profile_lifecycle [FS] [RUNS]` writes bench/results/profile-<fs>.txt (collapsed stacks)
and prints the heaviest elastivol frames (wall-clock samples, idle included: what a call waits on).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time

from bench.core import results_dir
from bench.env import served_pool
from bench.lifecycle import driver_once


def main(argv: list[str]) -> int:
    fs = argv[0] if argv else "xfs"
    runs = int(argv[1]) if len(argv) > 1 else 30
    spy = shutil.which("py-spy") or str(__import__("pathlib").Path(sys.executable).parent / "py-spy")
    out = results_dir() / f"profile-{fs}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with served_pool("profile", 8 << 30) as env:
        driver_once(env.client, env.kubelet, fs, -1)
        proc = subprocess.Popen([spy, "record", "--pid", str(env.server.pid), "--rate", "500", "--idle",
                                 "--format", "raw", "--output", str(out), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        t0 = time.perf_counter()
        for i in range(runs):
            driver_once(env.client, env.kubelet, fs, i)
        took = time.perf_counter() - t0
        time.sleep(0.5)
        proc.send_signal(2)
        proc.wait(30)
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        seen = set()
        for frame in stack.split(";"):
            if "elastivol" in frame and frame not in seen:
                seen.add(frame)
                counts[frame] += int(n)
    print(f"{runs} {fs} lifecycles in {took:.2f} s ({took / runs * 1e3:.1f} ms each); {total} samples")
    for frame, hits in counts.most_common(40):
        print(f"{hits:7d}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
