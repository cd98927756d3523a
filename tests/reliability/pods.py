"""Node plugins run as a DaemonSet pod would be: each start in a fresh mount namespace.

The host side (:func:`pod_host`) makes the work dir's ``kubelet`` directory a shared mount, so
staging and publish mounts made inside a plugin's namespace reach the host (the chart's
Bidirectional ``/var/lib/kubelet``), and ``ns`` a private one, under which each plugin binds
the pool at a path of its own that nothing outside sees. :class:`PodServer` starts
``elastivol serve`` through :mod:`tests.reliability.podns` (unshare(2), then exec); every start
is a new namespace with the pool at a new path, and a kill ends that namespace.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elastivol.errors import InUse
from elastivol.node import _sys, mount
from elastivol.process import ServerProcess
from elastivol.providers.local.pool import Pool
from tests.reliability.invariants import all_clean

MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def in_new_namespace(source: Path, target: Path) -> list[str]:
    """argv prefix that runs a command in a new mount namespace with ``source`` bound at ``target``."""
    return [sys.executable, "-m", "tests.reliability.podns", str(source), str(target), "--"]


@contextlib.contextmanager
def pod_host(work: Path) -> Iterator[Path]:
    """Shared ``work/kubelet``, private ``work/ns`` (yielded) for the test's duration."""
    made: list[Path] = []
    try:
        for name, propagation in (("kubelet", MS_SHARED), ("ns", MS_PRIVATE)):
            path = work / name
            path.mkdir(parents=True, exist_ok=True)
            mount.bind(str(path), str(path))
            made.append(path)
            _sys.mount(None, str(path), None, propagation, None)
        yield work / "ns"
    finally:
        for path in reversed(made):
            # Left mounted when something is still mounted under it: the leak checks report that.
            with contextlib.suppress(InUse):
                mount.unmount(str(path))


@dataclass
class PodServer(ServerProcess):
    """A server whose every start is a new pod: new mount namespace, pool bound at a new path."""

    host_pool: Path = Path()
    ns_dir: Path = Path()
    name: str = "pod"
    generation: int = 0

    @property
    def pod_pool(self) -> Path:
        return self.ns_dir / f"{self.name}-{self.generation}" / "pool"

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> ServerProcess:
        self.generation += 1
        at = self.args.index("--pool") + 1
        self.args[at] = str(self.pod_pool)
        self.prefix = in_new_namespace(self.host_pool, self.pod_pool)
        self.env = {**self.env, "PYTHONPATH": str(ROOT)}
        super().start(wait=wait, timeout=timeout)
        assert self.proc is not None
        assert os.readlink(f"/proc/{self.proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt"), \
            "the plugin did not get a mount namespace of its own"
        return self


def shared_images(pool_dir: Path) -> list[str]:
    """Pool images (live or deleted) that more than one loop device serves."""
    counts = Counter((f.device.backing, f.object_id) for f in Pool(pool_dir).loop_devices())
    return [f"{object_id or ident} has {n} loop devices" for (ident, object_id), n in counts.items() if n > 1]


def pod_clean(pool_dir: Path) -> list[str]:
    """:func:`all_clean`, except for the two mounts :func:`pod_host` itself keeps while in use."""
    own = {f"leaked {pool_dir.parent / name}" for name in ("kubelet", "ns")}
    return [p for p in all_clean(pool_dir) if p not in own]
