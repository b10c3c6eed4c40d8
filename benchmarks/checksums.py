"""Part integrity: what page checksums cost on disk, and what verifying every part costs the
analysis, side by side.

    python -m benchmarks.checksums [--steps 3000] [--tensors 100] [--repeat 7] [--out FILE]

Two data sets: the committed sample logs (``sample_runs/logs``, 13 small runs) and a run
recorded here by the Recorder (an MLP of ``--tensors`` parameter tensors trained ``--steps``
steps with the default schedules, parts of 1000 steps).

Bytes: every part is read and written again twice with the recorder's writer settings
(gradlog/recorder/writer.py: zstd level 3, the same dictionary columns and step encoding, step
statistics), once with ``write_page_checksum=True`` (what the recorder writes) and once without.

Time, per data set, each contender ``--repeat`` times, interleaved in a shuffled order per round
(the machine is shared: medians of the rounds, and the median of the per-round ratios):

* ``read``: ``pq.read_table`` of every part, ``page_checksum_verification`` off / on;
* ``analysis``: ``from_run(open_run(run), verify=False / True)``, then ``build_frames`` with the
  detectors' columns and the chart data read from the parts (``tensor_views``,
  ``exponent_histogram``): what ``gradlog analyze`` reads, without the detectors' own work;
* ``check``: opening the runs unverified, then ``check_parts`` (the verification the analysis
  now does first).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from gradlog.analysis.chartdata import exponent_histogram, tensor_views
from gradlog.analysis.frames import DETECTOR_COLUMNS, build_frames
from gradlog.analysis.loading import check_parts, from_run
from gradlog.rundir import find_runs, open_run

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs" / "logs"


def _parts(run: Path) -> list[Path]:
    return sorted(run.glob("*/rank=*/part-*.parquet"))


def _rewrite(src: Path, dst: Path, checksum: bool) -> int:
    """``src`` written again as the recorder writes parts, with or without page checksums."""
    pq.write_table(
        pq.read_table(src),
        dst,
        compression="zstd",
        compression_level=3,
        use_dictionary=["tensor", "kind", "name", "count", "run_id"],
        use_byte_stream_split=False,
        column_encoding={"step": "DELTA_BINARY_PACKED"},
        write_statistics=["step"],
        write_page_checksum=checksum,
        row_group_size=1 << 20,
    )
    return dst.stat().st_size


def _bytes(runs: list[Path], tmp: Path) -> tuple[int, int, int, int]:
    """(parts, rows, bytes without checksums, bytes with them) over every part of ``runs``."""
    n = rows = plain = crc = 0
    for run in runs:
        for part in _parts(run):
            n += 1
            rows += pq.ParquetFile(part).metadata.num_rows
            plain += _rewrite(part, tmp / "plain.parquet", False)
            crc += _rewrite(part, tmp / "crc.parquet", True)
    return n, rows, plain, crc


def _record(root: Path, steps: int, tensors: int) -> Path:
    import torch

    from gradlog.recorder import Recorder

    torch.manual_seed(0)
    layers = [torch.nn.Linear(32, 32) for _ in range(tensors // 2)]
    model = torch.nn.Sequential(*[m for layer in layers for m in (layer, torch.nn.Tanh())])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    rec = Recorder(
        model, opt, root=root, run_id="recorded", flush_every_steps=1000, flush_every_secs=3600
    )
    with rec:
        for _ in range(steps):
            opt.zero_grad()
            loss = model(torch.randn(16, 32)).pow(2).mean()
            loss.backward()
            opt.step()
            rec.log(loss=loss)
    return root / "recorded"


def _read(runs: list[Path], verify: bool) -> None:
    for run in runs:
        for part in _parts(run):
            pq.read_table(part, page_checksum_verification=verify)


def _analyse(runs: list[Path], verify: bool) -> None:
    for run in runs:
        data = from_run(open_run(run), verify=verify)
        assert not [p for p in data.problems if p.startswith("unreadable part")], data.problems
        build_frames(data, DETECTOR_COLUMNS)
        tensor_views(data)
        exponent_histogram(data)


def _check(runs: list[Path]) -> None:
    for run in runs:
        check_parts(from_run(open_run(run), verify=False))


def _timings(
    contenders: dict[str, Callable[[], None]], repeat: int
) -> dict[str, tuple[list[float], list[float]]]:
    """(wall, cpu) seconds of each contender per round; rounds interleave them, shuffled."""
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in contenders}
    for fn in contenders.values():  # warm-up: imports, page cache, polars' thread pool
        fn()
    order = list(contenders)
    rng = random.Random(0)
    for _ in range(repeat):
        rng.shuffle(order)
        for name in order:
            w0, c0 = time.perf_counter(), time.process_time()
            contenders[name]()
            out[name][0].append(time.perf_counter() - w0)
            out[name][1].append(time.process_time() - c0)
    return out


def _ratio(t: dict[str, tuple[list[float], list[float]]], a: str, b: str, i: int) -> float:
    return statistics.median(x / y for x, y in zip(t[a][i], t[b][i], strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gradlog-checksums-"))
    try:
        t0 = time.perf_counter()
        recorded = _record(tmp / "runs", args.steps, args.tensors)
        print(f"recorded {args.steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        sets = {"sample logs (13 runs)": find_runs(SAMPLES), "recorded run": [recorded]}
        lines = [
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start.",
            "",
            "| data | parts | rows | bytes without checksums | with | extra per part |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, runs in sets.items():
            n, rows, plain, crc = _bytes(runs, tmp)
            extra = 100 * (crc / plain - 1)
            lines.append(
                f"| {label} | {n} | {rows:,} | {plain:,} | {crc:,} (+{extra:.2f}%) "
                f"| {(crc - plain) / n:.0f} B |"
            )
        lines += [
            "",
            f"Medians of {args.repeat} interleaved rounds (wall / CPU seconds), and the median of "
            "the per-round ratios verified / unverified:",
            "",
            "| data | read, off | read, on | ratio (wall, CPU) | analysis, off | analysis, on"
            " | ratio (wall, CPU) | open + check_parts |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, runs in sets.items():
            contenders: dict[str, Callable[[], None]] = {
                "read_off": functools.partial(_read, runs, False),
                "read_on": functools.partial(_read, runs, True),
                "an_off": functools.partial(_analyse, runs, False),
                "an_on": functools.partial(_analyse, runs, True),
                "check": functools.partial(_check, runs),
            }
            t = _timings(contenders, args.repeat)

            def med(k: str, t: dict[str, tuple[list[float], list[float]]] = t) -> str:
                return f"{statistics.median(t[k][0]):.3f} / {statistics.median(t[k][1]):.3f}"

            lines.append(
                f"| {label} | {med('read_off')} | {med('read_on')} | "
                f"{_ratio(t, 'read_on', 'read_off', 0):.2f}, "
                f"{_ratio(t, 'read_on', 'read_off', 1):.2f} | {med('an_off')} | {med('an_on')} | "
                f"{_ratio(t, 'an_on', 'an_off', 0):.2f}, {_ratio(t, 'an_on', 'an_off', 1):.2f} | "
                f"{med('check')} |"
            )
        text = "\n".join(lines)
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
