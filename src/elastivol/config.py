"""What `elastivol serve` was asked to run: one plain record, read by the CLI, the app and every assembly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_KUBELET_DIR = "/var/lib/kubelet"


@dataclass
class ServeConfig:
    driver: str = "block"
    mode: str = "all"
    provider: str = "local"
    endpoint: str = "unix:///run/elastivol/csi.sock"
    node_id: str = ""
    zone: str = ""
    zones: list[str] = field(default_factory=list)
    pool: str = ""
    allowed_roots: list[str] = field(default_factory=list)
    metrics_address: str = ""
    max_volumes_per_node: int = 0
    overcommit_ratio: float = 1.0
    socket_mode: int = 0o660
    log_level: str = "info"
    log_format: str = "json"
    cluster_id: str = ""
    extra_volume_tags: dict[str, str] = field(default_factory=dict)
    default_volume_size: int = 1 << 30
    allow_privileged_mount_options: bool = False
    force_unsafe_socket_dir: bool = False
    enforce_performance: bool = True

    @property
    def controller(self) -> bool:
        return self.mode in ("controller", "all")

    @property
    def node(self) -> bool:
        return self.mode in ("node", "all")

    def served_zones(self) -> list[str]:
        return self.zones or ([self.zone] if self.zone else [])

    def roots(self) -> list[str]:
        if self.allowed_roots:
            return self.allowed_roots
        roots = [DEFAULT_KUBELET_DIR]
        if self.pool:
            roots.append(str(Path(self.pool).parent))
        return roots
