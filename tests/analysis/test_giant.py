"""Giant runs in bounded memory, on small runs forced into the long-run paths: multi-rank runs
merged window by window give what one merge of the whole run gives; bucketed histograms add up
to the exact ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from gradlog.analysis import frames as frames_mod
from gradlog.analysis.chartdata import tensor_views
from gradlog.analysis.frames import DETECTOR_COLUMNS, build_frames, step_windows
from gradlog.analysis.loading import load_run
from gradlog.schema import META_FILE
from tests.report.synthetic import write_run

TABLES = ("tensors", "hists", "steps", "scalars")


def _two_ranks(tmp_path: Path, steps: int = 600, part_steps: int = 100) -> Path:
    """A two-rank run (replicas with their own values), parts of ``part_steps`` steps."""
    a = write_run(tmp_path / "a", run_id="r", seed=0, steps=steps, part_steps=part_steps)
    b = write_run(tmp_path / "b", run_id="r", seed=1, steps=steps, part_steps=part_steps)
    for t in TABLES:
        shutil.move(b / t / "rank=0", a / t / "rank=1")
    meta = json.loads((a / META_FILE).read_text())
    meta["world_size"] = 2
    (a / META_FILE).write_text(json.dumps(meta))
    return a


def test_windows_cover_every_step_once_with_the_parts_that_hold_them(tmp_path: Path) -> None:
    run = load_run(_two_ranks(tmp_path))
    ws = step_windows(run, rows=1)  # as small as allowed: one part's span
    assert [(w.first, w.last) for w in ws] == [(a, a + 99) for a in range(0, 600, 100)]
    for w in ws:
        want = [p for p, (a, b) in run.step_ranges.items() if a <= w.last and b >= w.first]
        assert sorted(w.parts) == sorted(p for p in want if p.parent.parent.name == "tensors")
    assert len(step_windows(run, rows=10**12)) == 1


def test_windowed_rank_merge_equals_one_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _two_ranks(tmp_path)
    monkeypatch.setattr(frames_mod, "WINDOW_ROWS", 10**12)
    whole = build_frames(load_run(run_dir), DETECTOR_COLUMNS, exact_rows=0)
    views_whole = tensor_views(load_run(run_dir))
    monkeypatch.setattr(frames_mod, "WINDOW_ROWS", 1)
    assert len(step_windows(load_run(run_dir))) == 6
    windowed = build_frames(load_run(run_dir), DETECTOR_COLUMNS, exact_rows=0)
    views = tensor_views(load_run(run_dir))
    assert windowed.resolution == whole.resolution > 1
    for name in ("grad", "param", "update", "hist"):
        assert_frame_equal(getattr(windowed, name), getattr(whole, name), check_exact=False)
    assert views.matrix is not None
    assert views_whole.matrix is not None
    np.testing.assert_allclose(views.matrix.norms, views_whole.matrix.norms)
    assert views.ratios.keys() == views_whole.ratios.keys()


def test_bucketed_multi_rank_norms_are_the_bucket_maxima_of_the_exact_merge(
    tmp_path: Path,
) -> None:
    run_dir = _two_ranks(tmp_path)
    exact = build_frames(load_run(run_dir), DETECTOR_COLUMNS)
    bucketed = build_frames(load_run(run_dir), DETECTOR_COLUMNS, exact_rows=0)
    w = bucketed.resolution
    ref = (
        exact.grad.group_by("tensor", (pl.col("step") // w).alias("b"))
        .agg(pl.col("step").min(), pl.col("norm").max(), pl.col("nonfinite").sum())
        .drop("b")
        .sort("tensor", "step")
    )
    got = bucketed.grad.select("tensor", "step", "norm", "nonfinite").sort("tensor", "step")
    assert_frame_equal(got, ref.select(got.columns), check_exact=False, check_dtypes=False)


def test_bucketed_histograms_add_up_to_the_exact_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frames_mod, "BUCKET_ROWS", 100)  # buckets wider than the histograms' 50
    for run_dir in (_two_ranks(tmp_path / "two"), write_run(tmp_path / "one", steps=600)):
        exact = build_frames(load_run(run_dir), DETECTOR_COLUMNS).hist
        bucketed = build_frames(load_run(run_dir), DETECTOR_COLUMNS, exact_rows=0)
        assert bucketed.hist.height < exact.height
        totals = [pl.exclude("step", "tensor").sum()]
        assert_frame_equal(
            bucketed.hist.group_by("tensor").agg(*totals).sort("tensor"),
            exact.group_by("tensor").agg(*totals).sort("tensor"),
            check_exact=False,
        )
        assert bucketed.hist["step"].min() == exact["step"].min()
