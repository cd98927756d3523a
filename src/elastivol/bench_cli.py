"""`elastivol bench [NAMES...] [--quick]`: runs the benchmark suite in the repository's bench/ directory."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _bench_root() -> Path:
    # src/elastivol/bench_cli.py → the repository root holds bench/ (an editable install).
    return Path(__file__).resolve().parents[2]


@click.command("bench")
@click.argument("names", nargs=-1)
@click.option("--quick", "profile", flag_value="quick", help="Smaller sizes, fewer repetitions (< 3 min).")
@click.option("--smoke", "profile", flag_value="smoke", help="The tiniest profile (CI checks output shape).")
def bench(names: tuple[str, ...], profile: str | None) -> None:
    """Benchmarks measured side by side in one run: tables, bench/results/*.json and charts."""
    root = _bench_root()
    if not (root / "bench" / "runner.py").is_file():
        raise click.ClickException(f"the benchmark suite is not there ({root / 'bench'}): run from a source checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.runner import run_cli

    sys.exit(run_cli(names, profile or "full"))
