"""Results, statistics, tables and JSON shared by every benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """bench/results, or $ELASTIVOL_BENCH_RESULTS (the CI smoke test writes elsewhere)."""
    return Path(os.environ.get("ELASTIVOL_BENCH_RESULTS") or DEFAULT_RESULTS)
PROFILES = ("smoke", "quick", "full")


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def p90(xs: Sequence[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    # nearest-rank p90
    k = max(0, min(len(s) - 1, -(-9 * len(s) // 10) - 1))
    return float(s[k])


@dataclass
class Target:
    name: str
    value: float
    op: str  # "<=" or ">="
    threshold: float
    unit: str = ""

    @property
    def met(self) -> bool:
        if self.value != self.value:  # NaN: not measured
            return False
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass
class Result:
    name: str
    title: str
    profile: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "profile": self.profile,
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "seconds": round(self.seconds, 2),
            "columns": self.columns,
            "rows": self.rows,
            "figures": self.figures,
            "targets": [t.as_dict() for t in self.targets],
            "notes": self.notes,
            "charts": self.charts,
        }

    def write(self, out_dir: Path | None = None) -> Path:
        out_dir = out_dir or results_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")
        return path


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "—"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.3f}" if abs(v) < 2 else f"{v:.2f}"
    return str(v)


def print_result(console: Console, r: Result) -> None:
    table = Table(title=f"{r.title} [dim]({r.profile}, {r.seconds:.0f} s)[/dim]", title_justify="left")
    for c in r.columns:
        table.add_column(c, justify="left" if c == r.columns[0] else "right")
    for row in r.rows:
        table.add_row(*[fmt(v) for v in row])
    console.print(table)
    if r.targets:
        t = Table(show_header=True, title_justify="left")
        t.add_column("target")
        t.add_column("figure", justify="right")
        t.add_column("goal", justify="right")
        t.add_column("", justify="center")
        for tg in r.targets:
            mark = "[green]met[/green]" if tg.met else "[red]MISSED[/red]"
            t.add_row(tg.name, f"{fmt(tg.value)}{tg.unit}", f"{tg.op} {fmt(tg.threshold)}{tg.unit}", mark)
        console.print(t)
    for n in r.notes:
        console.print(f"  [dim]• {n}[/dim]")
    for c in r.charts:
        console.print(f"  chart: {c}")
