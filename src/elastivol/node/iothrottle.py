"""Per-cgroup I/O limits on one block device: blkio throttling (cgroup v1) or ``io.max`` (cgroup v2).

The kernel throttles the I/O that the tasks of a cgroup submit to a device, named by its
major:minor. A loop device's I/O is charged to the cgroup of the task that submits it, so limits on
a volume's loop device in a pod's cgroup hold that pod's direct reads and writes to the rate.

Which controller is used is found at run time from the mount table: a cgroup v1 hierarchy with the
``blkio`` controller, else a cgroup2 mount whose root offers ``io``. The two behave differently:

* v1 throttling is *flat*: a limit holds only the tasks directly in that cgroup, not its children.
  So limits meant for a pod are written to the pod's cgroup and to every cgroup below it.
* v2 is hierarchical: a limit on the pod's cgroup holds everything below it.

Every change is a plain write to a cgroup file (no commands run). The operations are idempotent and
can be repeated with new numbers: :func:`update_device` rewrites the limits wherever the device is
already limited, which is how a live change of a volume's performance reaches its running pods.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("elastivol.node.iothrottle")

MOUNTINFO = "/proc/self/mountinfo"
V1_FILES = {  # file -> which figure of IoLimits it takes
    "blkio.throttle.read_iops_device": "iops",
    "blkio.throttle.write_iops_device": "iops",
    "blkio.throttle.read_bps_device": "bps",
    "blkio.throttle.write_bps_device": "bps",
}
V2_FILE = "io.max"
# Where pods' cgroups live under a hierarchy's root: kubelet's cgroupfs and systemd drivers.
KUBEPODS_NAMES = ("kubepods", "kubepods.slice")
POD_SEARCH_DEPTH = 5
NO_CONTROLLER = (
    "no cgroup I/O controller found (neither a cgroup v1 blkio hierarchy nor cgroup v2 with the io "
    "controller is mounted here): volume performance is NOT enforced, every volume runs at the host "
    "disk's speed; mount the blkio (v1) or io (v2) controller at /sys/fs/cgroup, or turn enforcement off "
    "(--no-enforce-performance / StorageClass enforcePerformance: \"false\") to silence this"
)


@dataclass(frozen=True)
class IoLimits:
    """Limits for one device; 0 means unlimited. Each direction (read, write) gets the full figure."""

    iops: int = 0
    bps: int = 0

    def text(self) -> str:
        iops = f"{self.iops} IOPS" if self.iops else "unlimited IOPS"
        mibs = f"{self.bps / (1 << 20):.4g} MiB/s" if self.bps else "unlimited MiB/s"
        return f"{iops}, {mibs}"


@dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup hierarchy that can throttle I/O."""

    version: int  # 1: blkio throttle files; 2: io.max
    root: Path

    def __str__(self) -> str:
        return f"cgroup v{self.version} ({'blkio' if self.version == 1 else 'io'}) at {self.root}"


@dataclass
class Placement:
    """Where :func:`limit_device` put the limits, or why it put them nowhere."""

    cgroups: list[Path] = field(default_factory=list)
    problem: str = ""
    scope: str = ""  # "pod", "kubepods" or "" when nothing was applied


# -- discovery ----------------------------------------------------------------------------------
def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def detect(mountinfo: str = MOUNTINFO) -> Hierarchy | None:
    """The hierarchy to throttle with: cgroup v1 blkio if mounted, else cgroup v2 offering ``io``."""
    try:
        with open(mountinfo) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        log.warning("cannot read %s to find the cgroup controllers: %s", mountinfo, exc.strerror)
        return None
    v2: list[Path] = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point = Path(_unescape(fields[4]))
        if tail[0] == "cgroup" and "blkio" in tail[2].split(","):
            # A v1 controller can be mounted only once per hierarchy; take the first mount of it.
            return Hierarchy(1, point)
        if tail[0] == "cgroup2":
            v2.append(point)
    for point in v2:
        try:
            controllers = (point / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if "io" in controllers:
            return Hierarchy(2, point)
    return None


def device_number(device: str) -> tuple[int, int]:
    """(major, minor) of a block device node."""
    st = os.stat(device)
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _walk(root: Path, depth: int) -> Iterator[Path]:
    """Cgroup directories under ``root`` (itself included), breadth first, at most ``depth`` deep."""
    level = [root]
    for _ in range(depth + 1):
        below: list[Path] = []
        for d in level:
            yield d
            try:
                below.extend(sorted(e for e in d.iterdir() if e.is_dir() and not e.is_symlink()))
            except OSError:
                continue  # a cgroup removed while we looked
        level = below
        if not level:
            return


def find_pod_cgroup(h: Hierarchy, pod_uid: str) -> Path | None:
    """The cgroup kubelet made for pod ``pod_uid``: ``.../pod<uid>`` (cgroupfs) or ``...-pod<uid_>.slice`` (systemd)."""
    if not pod_uid or "/" in pod_uid:
        return None
    names = {f"pod{pod_uid}"}
    systemd_suffix = f"-pod{pod_uid.replace('-', '_')}.slice"
    for d in _walk(h.root, POD_SEARCH_DEPTH):
        if d.name in names or d.name.endswith(systemd_suffix):
            return d
    return None


def kubepods_cgroup(h: Hierarchy) -> Path | None:
    """The cgroup that holds every pod on this node, if kubelet made one here."""
    for d in _walk(h.root, 2):
        if d.name in KUBEPODS_NAMES:
            return d
    return None


# -- limits -------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    # One write(2): the kernel parses each write of a cgroup file on its own.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _enable_io(h: Hierarchy, cgroup: Path) -> None:
    """cgroup v2: make ``io`` available in ``cgroup`` by enabling it in each ancestor's subtree_control."""
    chain = [p for p in [cgroup, *cgroup.parents] if p == h.root or h.root in p.parents]
    for parent in reversed(chain[1:]):
        control = parent / "cgroup.subtree_control"
        if "io" not in control.read_text().split():
            _write(control, "+io")


def set_limits(h: Hierarchy, cgroup: Path, dev: tuple[int, int], limits: IoLimits) -> None:
    """Limit ``cgroup``'s I/O to device ``dev``; zeros remove the limits."""
    majmin = f"{dev[0]}:{dev[1]}"
    if h.version == 1:
        for name, which in V1_FILES.items():
            _write(cgroup / name, f"{majmin} {getattr(limits, which)}\n")
        return
    _enable_io(h, cgroup)
    iops = str(limits.iops) if limits.iops else "max"
    bps = str(limits.bps) if limits.bps else "max"
    _write(cgroup / V2_FILE, f"{majmin} rbps={bps} wbps={bps} riops={iops} wiops={iops}\n")


def clear_limits(h: Hierarchy, cgroup: Path, dev: tuple[int, int]) -> None:
    set_limits(h, cgroup, dev, IoLimits())


def read_limits(h: Hierarchy, cgroup: Path, dev: tuple[int, int]) -> IoLimits | None:
    """The limits ``cgroup`` has on ``dev`` (read IOPS and read bytes/s), or None when it has none."""
    majmin = f"{dev[0]}:{dev[1]}"
    found: dict[str, int] = {}
    try:
        if h.version == 1:
            for name in ("blkio.throttle.read_iops_device", "blkio.throttle.read_bps_device"):
                for line in (cgroup / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == majmin:
                        found[V1_FILES[name]] = int(value)
        else:
            for line in (cgroup / V2_FILE).read_text().splitlines():
                words = line.split()
                if words and words[0] == majmin:
                    pairs = dict(w.split("=", 1) for w in words[1:])
                    found = {"iops": _v2_number(pairs.get("riops")), "bps": _v2_number(pairs.get("rbps"))}
    except OSError:
        return None
    if not found or not any(found.values()):
        return None
    return IoLimits(iops=found.get("iops", 0), bps=found.get("bps", 0))


def _v2_number(text: str | None) -> int:
    return 0 if text in (None, "max") else int(text)


def cgroups_limiting(h: Hierarchy, dev: tuple[int, int]) -> list[Path]:
    """Every cgroup that has limits on ``dev`` (the kernel's record is the truth, not ours)."""
    return [d for d in _walk(h.root, 64) if read_limits(h, d, dev) is not None]


def _targets(h: Hierarchy, top: Path) -> list[Path]:
    # v1 is flat: a limit binds only the cgroup's own tasks, so the subtree gets it too.
    return list(_walk(top, 64)) if h.version == 1 else [top]


def limit_device(
    device: str, limits: IoLimits, *, pod_uid: str = "", what: str = "", h: Hierarchy | None = None
) -> Placement:
    """Apply ``limits`` to ``device`` for pod ``pod_uid``'s cgroup (or, without one, at the kubepods level).

    Never silent: when no controller or no cgroup is found, the reason is logged and returned.
    """
    what = what or device
    h = h if h is not None else detect()
    if h is None:
        log.warning("%s: %s", what, NO_CONTROLLER)
        return Placement(problem=NO_CONTROLLER)
    dev = device_number(device)
    top = find_pod_cgroup(h, pod_uid) if pod_uid else None
    scope = "pod"
    if top is None:
        top = kubepods_cgroup(h)
        scope = "kubepods"
    if top is None:
        why = (
            f"no cgroup of pod {pod_uid} under {h}" if pod_uid
            else "no pod uid in volume_context (is podInfoOnMount: true set on the CSIDriver?)"
        )
        problem = f"{why}, and no kubepods cgroup either: {what} ({device}) runs unthrottled at host speed"
        log.warning("%s", problem)
        return Placement(problem=problem)
    done: list[Path] = []
    failures: list[str] = []
    for cgroup in _targets(h, top):
        try:
            set_limits(h, cgroup, dev, limits)
            done.append(cgroup)
        except FileNotFoundError:
            continue  # a cgroup that went away while we walked
        except OSError as exc:
            # The volume stays usable: a throttle we could not set is reported, not fatal.
            failures.append(f"cannot limit {device} in {cgroup}: {exc.strerror}")
            log.warning("%s: %s", what, failures[-1])
    if scope == "kubepods":
        shared = "shared by every pod on this node" if h.version == 2 else "in every pod's cgroup on this node"
        log.warning(
            "%s: %s; limits set at the kubepods level (%s), %s",
            what, f"no cgroup found for pod {pod_uid}" if pod_uid else "no pod uid in volume_context", top, shared,
        )
    log.info("%s: limited %s to %s in %d cgroup(s) under %s (%s)", what, device, limits.text(), len(done), top, h)
    return Placement(cgroups=done, scope=scope, problem="; ".join(failures))


def update_device(device: str, limits: IoLimits, *, what: str = "", h: Hierarchy | None = None) -> list[Path]:
    """Rewrite ``device``'s limits in every cgroup that already has some: a live change of performance."""
    h = h if h is not None else detect()
    if h is None:
        log.warning("%s: %s", what or device, NO_CONTROLLER)
        return []
    dev = device_number(device)
    changed = []
    for cgroup in cgroups_limiting(h, dev):
        set_limits(h, cgroup, dev, limits)
        changed.append(cgroup)
    log.info("%s: limits of %s changed to %s in %d cgroup(s)", what or device, device, limits.text(), len(changed))
    return changed


def converge(device: str, limits: IoLimits, *, what: str = "", h: Hierarchy | None = None) -> list[Path]:
    """Like :func:`update_device`, but writes only where the limits differ: cheap enough to run in a loop."""
    h = h if h is not None else detect()
    if h is None:
        return []
    dev = device_number(device)
    changed = []
    for cgroup in cgroups_limiting(h, dev):
        if read_limits(h, cgroup, dev) != limits:
            set_limits(h, cgroup, dev, limits)
            changed.append(cgroup)
    if changed:
        log.info("%s: limits of %s changed to %s in %d cgroup(s)", what or device, device, limits.text(), len(changed))
    return changed


def spread_down(device: str, *, h: Hierarchy | None = None) -> list[Path]:
    """cgroup v1: give the cgroups made below a limited one since (containers started after publish) its limits.

    Flat v1 throttling would leave a container's new cgroup unlimited; the node plugin calls this
    periodically. The top-most limited cgroup's figures win. On v2 limits are hierarchical: no-op.
    """
    h = h if h is not None else detect()
    if h is None or h.version != 1:
        return []
    dev = device_number(device)
    tops: dict[Path, IoLimits] = {}
    for cgroup in cgroups_limiting(h, dev):
        if not any(t in cgroup.parents for t in tops):
            limits = read_limits(h, cgroup, dev)
            if limits is not None:
                tops[cgroup] = limits
    added: list[Path] = []
    for top, limits in tops.items():
        for cgroup in _walk(top, 64):
            if cgroup != top and read_limits(h, cgroup, dev) != limits:
                try:
                    set_limits(h, cgroup, dev, limits)
                except FileNotFoundError:
                    continue
                added.append(cgroup)
    if added:
        log.info("%s: limits spread to %d new cgroup(s) below the pods' cgroups", device, len(added))
    return added


# -- cgroups of our own (the lab's pods, tests, benchmarks) -------------------------------------
def make_cgroup(h: Hierarchy, relative: str) -> Path:
    path = h.root / relative
    path.mkdir(parents=True, exist_ok=True)
    return path


def join(cgroup: Path, pid: int = 0) -> None:
    """Move process ``pid`` (0: the caller) into ``cgroup``."""
    _write(cgroup / "cgroup.procs", f"{pid or os.getpid()}\n")


def remove_cgroup(cgroup: Path, *, parent_if_empty: bool = False) -> None:
    """Remove ``cgroup`` and the empty cgroups below it (deepest first); a missing one is fine.

    ``parent_if_empty``: also its parent (a grouping cgroup of ours) when no other child is left.
    """
    if cgroup.is_dir():
        for d in sorted(_walk(cgroup, 64), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except FileNotFoundError:
                continue
    if parent_if_empty:
        try:
            cgroup.parent.rmdir()
        except OSError:
            pass  # another pod's cgroup is still there, or it is already gone
