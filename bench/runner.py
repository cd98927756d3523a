"""Run benchmarks by name, print their tables, write their JSON."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import time
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from bench.core import PROFILES, Result, print_result

# name → module (each has run(profile) -> Result), in the order.
BENCHMARKS = {
    "lifecycle": "bench.lifecycle",
    "snapshots": "bench.snapshots",
    "datapath": "bench.datapath",
    "scale": "bench.scale",
    "file": "bench.filevol",
    "aws": "bench.aws",
    "perf": "bench.perf",
    "footprint": "bench.footprint",
    "group": "bench.group",
}


# name → (module it needs beyond elastivol's own dependencies, what installs it)
NEEDS = {"aws": ("moto", "pip install 'elastivol[bench]'")}


def missing_dependency(name: str) -> str | None:
    """Why benchmark ``name`` cannot run here (a module that is not installed), or None."""
    need = NEEDS.get(name)
    if need is None or importlib.util.find_spec(need[0]) is not None:
        return None
    return f"{name} needs {need[0]}, which is not installed: {need[1]}"


def available() -> list[str]:
    out = []
    for name, mod in BENCHMARKS.items():
        try:
            importlib.util.find_spec(mod)
        except ModuleNotFoundError:
            continue
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def run_benchmarks(names: Sequence[str], profile: str, console: Console) -> list[Result]:
    results: list[Result] = []
    for name in names:
        mod = importlib.import_module(BENCHMARKS[name])
        console.rule(f"[bold]{name}[/bold] ({profile})")
        t0 = time.perf_counter()
        result: Result = mod.run(profile)
        result.seconds = time.perf_counter() - t0
        path = result.write()
        print_result(console, result)
        console.print(f"  json: {path}")
        results.append(result)
    return results


def summary(console: Console, results: Sequence[Result]) -> int:
    missed = [(r.name, t) for r in results for t in r.targets if not t.met]
    total = sum(len(r.targets) for r in results)
    console.print(f"\n[bold]targets:[/bold] {total - len(missed)} of {total} met")
    for name, t in missed:
        console.print(f"  [red]missed[/red] {name}: {t.name} = {t.value:.3g}{t.unit} (goal {t.op} {t.threshold:g})")
    return len(missed)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions (< 3 min)")
    group.add_argument("--smoke", action="store_true", help="the tiniest profile (CI: output shape only)")
    args = parser.parse_args(list(argv))
    return run_cli(args.names, "smoke" if args.smoke else "quick" if args.quick else "full")


def run_cli(names: Sequence[str], profile: str) -> int:
    assert profile in PROFILES
    console = Console(width=int(os.environ.get("COLUMNS", "130")))
    have = available()
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        console.print(f"[red]unknown benchmark(s):[/red] {', '.join(unknown)}; choose from {', '.join(have)}")
        return 2
    missing = [n for n in names if n not in have]
    if missing:
        console.print(f"[red]not built yet:[/red] {', '.join(missing)}")
        return 2
    lacking = {n: why for n in (names or have) if (why := missing_dependency(n))}
    if names and lacking:  # asked for by name: say why it cannot run
        for why in lacking.values():
            console.print(f"[red]cannot run[/red] {escape(why)}")
        return 2
    for why in lacking.values():
        console.print(f"[yellow]skipped:[/yellow] {escape(why)}")
    from bench import charts  # after the checks: only needs bench.core

    if not charts.available():
        console.print(f"[yellow]no charts:[/yellow] matplotlib is not installed, so the tables and JSON are "
                      f"written without PNG charts; {escape(charts.HOW_TO_GET)} to get them")
    if os.geteuid() != 0:
        console.print("[red]the benchmarks attach loop devices and mount filesystems: run them as root[/red]")
        return 1
    results = run_benchmarks(list(names) or [n for n in have if n not in lacking], profile, console)
    summary(console, results)
    return 0
