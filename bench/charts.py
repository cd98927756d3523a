"""PNG charts with matplotlib (Agg: no display needed).

matplotlib is optional (the ``bench`` extra): without it the benchmarks still run and print their
tables; the chart functions return None and the runner says how to get the charts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core import Result, median, p90, results_dir

plt: Any
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as _pyplot

    plt = _pyplot
except ModuleNotFoundError:
    plt = None

HOW_TO_GET = "pip install 'elastivol[bench]'"


def _save(fig: Any, name: str) -> str:
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    root = Path(__file__).resolve().parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def available() -> bool:
    return plt is not None


def lifecycle(r: Result) -> str | None:
    if plt is None:
        return None
    raw: dict[str, dict[str, list[float]]] = r.figures["seconds"]
    fss = list(raw)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.38
    for j, (who, color) in enumerate((("driver", "#2b6cb0"), ("floor", "#a0aec0"))):
        xs = [i + (j - 0.5) * width for i in range(len(fss))]
        med = [median(raw[fs][who]) * 1e3 for fs in fss]
        hi = [p90(raw[fs][who]) * 1e3 - m for fs, m in zip(fss, med, strict=True)]
        ax.bar(xs, med, width, yerr=[[0] * len(med), hi], capsize=4, color=color,
               label="elastivol (gRPC socket)" if who == "driver" else "shell floor (bash script)")
        for x, m in zip(xs, med, strict=True):
            ax.text(x, m / 2, f"{m:.0f} ms", ha="center", va="center", fontsize=9, color="white")  # inside: clear of the whisker
    ax.set_xticks(range(len(fss)), fss)
    ax.set_ylabel("full lifecycle, ms (median, whisker = p90)")
    ax.set_title("Block volume lifecycle: elastivol vs the shell floor")
    ax.legend(fontsize=8)
    return _save(fig, "lifecycle")


def snapshots(r: Result) -> str | None:
    if plt is None:
        return None
    pts: list[dict[str, Any]] = r.figures["points"]
    sizes = [p["data_mib"] for p in pts]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for key, label, style in (("snapshot_s", "elastivol CreateSnapshot", "o-"),
                              ("restore_s", "elastivol restore", "s--"),
                              ("clone_s", "elastivol clone", "^--"),
                              ("cp_s", "cp --sparse=always --reflink=never", "D-"),
                              ("tar_s", "tar czf (host-path driver)", "v-")):
        ax.plot(sizes, [p[key] * 1e3 for p in pts], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{s} MiB" if s < 1024 else f"{s // 1024} GiB" for s in sizes])
    ax.set_xlabel("data written in the volume")
    ax.set_ylabel("time, ms (median)")
    ax.set_title("Snapshot cost against data size")
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, "snapshots")
