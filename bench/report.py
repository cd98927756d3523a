"""Render bench/results/*.json as Markdown (docs/performance.md): `python -m bench.report [OUT]`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.core import fmt, results_dir
from bench.runner import BENCHMARKS


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return out


def render(results: Path, command: str) -> str:
    lines = ["## Performance", "",
             "Measured by `bench/`, every figure a median over repetitions or a ratio of two things measured side by "
             "side in the same run, on a small, noisy machine (2 cores). Made with:", "", "```sh", command, "```", ""]
    targets: list[list[Any]] = []
    for name in BENCHMARKS:
        path = results / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        lines += [f"### {data['title']}", ""]
        lines += _table(data["columns"], data["rows"])
        lines.append("")
        for note in data["notes"]:
            lines.append("- " + note.replace("<", "&lt;"))
        for chart in data["charts"]:
            rel = Path(chart)
            lines += ["", f"![{rel.stem}](../{rel.as_posix()})"]
        lines.append("")
        for t in data["targets"]:
            targets.append([t["name"], f"{fmt(t['value'])}{t['unit']}", f"{t['op']} {fmt(t['threshold'])}{t['unit']}",
                            "met" if t["met"] else "**missed**"])
        lines.append(f"<sub>{data['profile']} profile, {data['generated']}, kernel {data['host']['kernel']}, "
                     f"{data['host']['cpus']} CPUs, {data['seconds']} s</sub>")
        lines.append("")
    lines += ["### Targets", "", *_table(["target", "figure", "goal", ""], targets), ""]
    analysis = Path(__file__).resolve().parent / "analysis.md"
    if analysis.exists():  # hand-written: what limits each missed target
        lines += [analysis.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "docs" / "performance.md"
    command = os.environ.get("ELASTIVOL_BENCH_COMMAND") or (
        "sudo elastivol bench        # or: python -m bench; --quick for the < 3 min profile")
    out.write_text(render(results_dir(), command))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
