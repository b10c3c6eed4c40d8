"""Regenerate the report screenshots of the docs: ``run_report.png`` and ``batch_report.png``.

    python -m docs.screenshots.make_screenshots [--work /tmp/gradlog-screenshots] [--reuse]

Run from the repository root. Trains the sample CNN on the 8x8 digits
(:func:`sample_runs.cnn_digits.train`, CPU, about a minute per run) once with the defaults and
once per learning rate of a 3-run sweep, builds the run report and the batch report with
:func:`gradlog.report.build_report`, and photographs them in headless Chromium (the browser
helper of the report tests: Debian packages ``chromium`` and ``chromium-driver``, and selenium):
the run page from the top to the update-to-weight ratios, the batch page whole. The pages must
draw every chart without a console error, or no picture is written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from tests.report import browser

HERE = Path(__file__).resolve().parent
WIDTH = 1100
"""Window width in CSS pixels: the report's layout at a laptop's width."""
SWEEP_LRS = (3e-4, 3e-3, 3e-2)
"""Learning rates of the batch: too low, about right and too high for Adam on this CNN."""


def _train(root: Path, reuse: bool) -> tuple[Path, Path]:
    """The single run's directory and the sweep's root, trained now unless ``reuse``."""
    from sample_runs.cnn_digits import train

    single, sweep = root / "single", root / "sweep"
    if reuse and single.is_dir() and sweep.is_dir():
        run = next(p for p in single.iterdir() if p.is_dir())
        return run, sweep
    shutil.rmtree(root, ignore_errors=True)
    run = train(single, name="cnn-digits-adam", progress=True)
    for lr in SWEEP_LRS:
        train(sweep, name=f"cnn-lr-{lr:g}", lr=lr, progress=True)
    return run, sweep


def _shoot(driver: Any, page: Path, out: Path, until: str | None = None) -> None:
    """A PNG of ``page`` from the top to the end of the section ``until`` (else all of it)."""
    seconds = browser.open_report(driver, page, timeout=60)
    errors = browser.console_errors(driver)
    if errors:
        raise SystemExit(f"{page} logged console errors: {errors}")
    bottom = driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "return e ? Math.ceil(e.getBoundingClientRect().bottom + window.scrollY) + 16 : 0;",
        until or "",
    )
    browser.screenshot(driver, out, width=WIDTH, max_height=int(bottom) or 6000)
    print(f"{out} ({out.stat().st_size / 1e3:.0f} kB; the page drew in {seconds:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/gradlog-screenshots"))
    ap.add_argument("--out", type=Path, default=HERE, help="folder for the PNG files")
    ap.add_argument("--reuse", action="store_true", help="keep runs trained by an earlier call")
    args = ap.parse_args(argv)
    reason = browser.missing_reason()
    if reason is not None:
        sys.exit(f"cannot take screenshots: {reason}")

    from gradlog.report import build_report

    run, sweep = _train(args.work / "runs", args.reuse)
    run_page = build_report([run], args.work / "run" / "report.html")
    batch_page = build_report([sweep], args.work / "batch" / "report.html")
    args.out.mkdir(parents=True, exist_ok=True)
    with browser.chromium(width=WIDTH) as driver:
        _shoot(driver, run_page, args.out / "run_report.png", until="sec-ratio")
        _shoot(driver, batch_page, args.out / "batch_report.png")


if __name__ == "__main__":
    main()
