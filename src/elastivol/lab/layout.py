"""Where a lab keeps everything, and its configuration (nodes, zones, file system)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from elastivol import BLOCK_DRIVER_NAME, FILE_DRIVER_NAME
from elastivol.errors import FailedPrecondition, InvalidArgument
from elastivol.store import atomic_write_json

DRIVERS = (BLOCK_DRIVER_NAME, FILE_DRIVER_NAME)
SHORT = {BLOCK_DRIVER_NAME: "block", FILE_DRIVER_NAME: "file"}
MAX_NODES = 5


def default_dir() -> Path:
    env = os.environ.get("ELASTIVOL_LAB_DIR")
    if env:
        return Path(env)
    return Path.home() / ".elastivol" / "lab"


@dataclass
class LabNode:
    name: str
    zone: str


@dataclass
class LabConfig:
    nodes: list[LabNode]
    zones: list[str]
    fs_id: str = ""
    version: int = 1
    created_dirs: list[str] = field(default_factory=list)

    def node(self, name: str) -> LabNode | None:
        return next((n for n in self.nodes if n.name == name), None)


DEFAULT_ZONES = ("zone-a", "zone-b", "zone-c")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def make_config(nodes: int, zones: list[str]) -> LabConfig:
    if not 1 <= nodes <= MAX_NODES:
        raise InvalidArgument(f"--nodes {nodes}: the lab runs 1 to {MAX_NODES} nodes")
    if not zones or any(not z for z in zones):
        raise InvalidArgument(f"--zones needs at least one zone name, e.g. --zones {','.join(DEFAULT_ZONES)}")
    # The zones are named exactly as given: a StorageClass's allowedTopologies or a PV's node
    # affinity names them, so a lab made with --zones us-east-1a must have a zone us-east-1a.
    names = list(zones)
    bad = [z for z in names if not _LABEL_VALUE.fullmatch(z)]
    if bad:
        raise InvalidArgument(f"--zones: {', '.join(map(repr, bad))} cannot be a node label value (letters, digits, "
                              "'-', '_' and '.', at most 63, starting and ending with a letter or digit)")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"--zones {','.join(zones)} names a zone twice")
    return LabConfig(nodes=[LabNode(f"node-{i + 1}", names[i % len(names)]) for i in range(nodes)], zones=names)


class _Below:
    """A path below the lab's root, as a read-only attribute of :class:`Layout`."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, layout: Layout, owner: type[Layout]) -> Path:
        return layout.root.joinpath(*self.parts)


@dataclass(frozen=True)
class Layout:
    root: Path

    # Everything a lab keeps, below its root.
    config_file = _Below("lab.json")
    block_pool = _Below("pool")
    file_pool = _Below("fspool")
    fs_root = _Below("fspool", "fs", "shared")
    kubelet = _Below("kubelet")
    sockets = _Below("sockets")
    logs = _Below("logs")
    pods = _Below("pods")
    pid_file = _Below("daemon.pid")
    status_file = _Below("status.json")

    def socket(self, driver: str, node: str | None) -> Path:
        return self.sockets / f"{SHORT[driver]}-{node or 'controller'}.sock"

    def pod_dir(self, uid: str) -> Path:
        return self.pods / uid

    def read_config(self) -> LabConfig:
        try:
            raw = json.loads(self.config_file.read_text())
        except FileNotFoundError:
            raise FailedPrecondition(
                f"no lab in {self.root}: start one with `elastivol lab up --dir {self.root}`"
            ) from None
        return LabConfig(nodes=[LabNode(**n) for n in raw["nodes"]], zones=raw["zones"], fs_id=raw.get("fs_id", ""),
                         version=raw.get("version", 1), created_dirs=raw.get("created_dirs", []))

    def write_config(self, config: LabConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_file, asdict(config))


def daemon_pid(layout: Layout) -> int | None:
    """The lab daemon's pid if it is alive."""
    try:
        pid = int(layout.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"_daemon" in cmdline and str(layout.root).encode() in cmdline else None
