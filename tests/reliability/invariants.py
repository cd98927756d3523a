"""What must hold of a pool once every call of a sequence has succeeded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from elastivol import recovery
from elastivol.providers.local.pool import Pool
from tests.helpers import leaked


def pool_problems(pool_dir: Path, *, live_names: frozenset[str] = frozenset()) -> list[str]:
    """Every broken invariant of the pool, as sentences (empty when all hold)."""
    pool = Pool(pool_dir)
    out: list[str] = []
    volumes = pool.volumes.all()
    snapshots = pool.snapshots.all()
    for store in (pool.volumes, pool.snapshots, pool.nodes):
        out += [f"unparsable metadata {p.path}: {p.reason}" for p in store.problems]
    names = Counter(r["name"] for r in volumes)
    out += [f"{n} volumes named {name!r}" for name, n in names.items() if n > 1]
    out += [f"volume {name!r} is missing" for name in live_names if name not in names]
    out += [f"volume {r['id']} is {r.get('state')}" for r in volumes if r.get("state") != "ready"]
    out += [f"volume {r['id']} has no image" for r in volumes if not pool.image_path(r["id"]).exists()]
    known = {r["id"] for r in volumes}
    out += [f"orphan image {p}" for p in pool.images.iterdir() if p.name.removesuffix(".img") not in known]
    snaps = {r["id"] for r in snapshots}
    out += [f"orphan snapshot image {p}" for p in pool.snapshot_images.iterdir()
            if p.name.removesuffix(".img") not in snaps]
    out += [f"snapshot {r['id']} is {r.get('state')}" for r in snapshots if r.get("state") != "ready"]
    out += [f"snapshot {r['id']} has no image" for r in snapshots if not pool.snapshot_path(r["id"]).exists()]
    for store in (pool.volumes, pool.snapshots, pool.nodes):
        out += [f"temp record {p}" for p in store.directory.glob(".*.tmp")]
    out += [f"doctor finding {f.kind} {f.subject}" for f in recovery.scan_pool(pool) + recovery.scan_loops(pool)]
    return out


def all_clean(pool_dir: Path) -> list[str]:
    """Pool invariants plus: no loop device over a pool file, no mount left under the work dir."""
    pool = Pool(pool_dir)
    out = pool_problems(pool_dir)
    out += [f"volume {r['name']!r} ({r['id']}) left behind" for r in pool.volumes.all()]
    out += [f"snapshot {r['name']!r} ({r['id']}) left behind" for r in pool.snapshots.all()]
    out += [f"leaked {x}" for x in leaked(pool_dir)]
    return out
