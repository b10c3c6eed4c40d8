"""Regenerate the sample runs: ``python -m sample_runs.make_samples --out sample_runs/logs``.

Each scenario is trained afresh into ``<out>/<scenario>/<run_id>/`` after its old logs are
deleted; a progress line per scenario and the total time are printed.
"""

from __future__ import annotations

import argparse
import shutil
import time
import warnings
from pathlib import Path

from sample_runs.scenarios import SCENARIOS

DEFAULT_OUT = Path(__file__).resolve().parent / "logs"


def dir_size(path: Path) -> int:
    """Total bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def generate(out: Path, only: list[str] | None = None, *, quiet: bool = False) -> dict[str, Path]:
    """Train the scenarios in ``only`` (all when None) into ``out``; returns run dirs by name."""
    unknown = sorted(set(only or []) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}")
    names = [n for n in SCENARIOS if only is None or n in only]
    runs: dict[str, Path] = {}
    total = time.perf_counter()
    for name in names:
        root = out / name
        if root.exists():
            shutil.rmtree(root)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. CPU autocast notes; not ours
            runs[name] = SCENARIOS[name].train(root)
        if not quiet:
            size = dir_size(root) / 1024
            print(f"{name:<24} {time.perf_counter() - start:6.1f} s  {size:7.0f} KiB  {runs[name]}")
    if not quiet:
        print(f"{len(names)} scenario(s) in {time.perf_counter() - total:.1f} s")
    return runs


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="root of the sample logs")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="regenerate only this scenario (repeatable)"
    )
    args = parser.parse_args(argv)
    generate(args.out, args.only)


if __name__ == "__main__":
    main()
