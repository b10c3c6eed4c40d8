"""Fault injection: what a writer, a disk or a hostile user can leave in a directory of runs, read
by ``gradlog ls``, ``show``, ``analyze --json`` and ``report`` as a user runs them (subprocesses).

One batch holds two intact runs recorded by the real recorder and one damaged copy per fault
class (truncation at several offsets, zero bytes, bit flips with a fixed seed, schema drift, wrong
column types, permissions, symlinks, non-UTF-8 names, hostile meta.json values, stray entries, a
missing rank, +Inf everywhere, a corrupt cached result). Every command must finish without a
traceback, with the documented exit code (3: a broken run is present; 0 with
``--allow-incomplete``), list every run, analyse the intact runs and intact parts in full and
name what is wrong with each damaged one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gradlog.recorder import Recorder
from gradlog.schema import META_FILE
from tests import cli

STEPS = 30


def _record(root: Path, run_id: str, *, world_size: int = 1) -> Path:
    """A real 30-step run: parameters, updates and histograms every 10 steps, a loss scalar."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 6), torch.randn(64, 3)
    with Recorder(model, opt, root=root, run_id=run_id, hists=10, flush_every_steps=10) as rec:
        for _ in range(STEPS):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            rec.log(loss=loss.item())
    return root / run_id


def _parts(run: Path, table: str = "tensors") -> list[Path]:
    return sorted((run / table).glob("rank=*/part-*.parquet"))


def _meta(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / META_FILE).read_text()))


def _set_meta(run: Path, **fields: Any) -> None:
    meta = _meta(run)
    meta.update(fields)
    (run / META_FILE).write_text(json.dumps(meta))


def _raw_meta(text: str | bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / META_FILE
        path.write_bytes(text.encode() if isinstance(text, str) else text)

    return damage


def _meta_deep_field(run: Path) -> None:
    text = (run / META_FILE).read_text()[:-1]
    (run / META_FILE).write_text(text + ', "config": ' + "[" * 50_000 + "]" * 50_000 + "}")


def _meta_fields(**fields: Any) -> Callable[[Path], None]:
    return lambda run: _set_meta(run, **fields)


def _truncate(table: str, fraction: float) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        part = _parts(run, table)[0]
        data = part.read_bytes()
        part.write_bytes(data[: int(len(data) * fraction)])

    return damage


def _zero_bytes(run: Path) -> None:
    _parts(run)[1].write_bytes(b"")


def _flip(seed: int) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        rng = np.random.default_rng(seed)
        parts = _parts(run) + _parts(run, "steps")
        part = parts[int(rng.integers(len(parts)))]
        data = bytearray(part.read_bytes())
        bit = int(rng.integers(len(data) * 8))
        data[bit // 8] ^= 1 << (bit % 8)
        part.write_bytes(bytes(data))

    return damage


def _rewrite(run: Path, edit: Callable[[pa.Table], pa.Table], index: int = 1) -> None:
    part = _parts(run)[index]
    pq.write_table(edit(pq.read_table(part)), part)


def _foreign_schema(run: Path) -> None:
    pq.write_table(pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]}), _parts(run)[1])


def _steps_schema_in_tensors(run: Path) -> None:
    shutil.copy(_parts(run, "steps")[0], _parts(run)[1])


def _extra_column(run: Path) -> None:
    _rewrite(run, lambda t: t.append_column("extra", pa.array([1.0] * t.num_rows)))


def _missing_column(run: Path) -> None:
    _rewrite(run, lambda t: t.drop_columns(["sumsq"]))


def _step_as_string(run: Path) -> None:
    def edit(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("step")
        return t.set_column(i, "step", t.column("step").cast(pa.string()))

    _rewrite(run, edit)


def _sumsq_as_string(run: Path) -> None:
    def edit(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("sumsq")
        return t.set_column(i, "sumsq", pa.array(["x"] * t.num_rows))

    _rewrite(run, edit)


def _schema_version(run: Path) -> None:
    def edit(t: pa.Table) -> pa.Table:
        return t.replace_schema_metadata({"gradlog_schema_version": "99"})

    _rewrite(run, edit)


def _chmod_part(run: Path) -> None:
    _parts(run)[1].chmod(0)


def _chmod_table(run: Path) -> None:
    (run / "hists").chmod(0)


def _chmod_run(run: Path) -> None:
    run.chmod(0)


def _chmod_meta(run: Path) -> None:
    (run / META_FILE).chmod(0)


def _dangling_symlink(run: Path) -> None:
    (_parts(run)[0].parent / "part-000099.parquet").symlink_to(run / "nowhere.parquet")


def _symlink_loop(run: Path) -> None:
    (_parts(run)[0].parent / "part-000098.parquet").symlink_to("part-000098.parquet")


def _symlinked_table_loop(run: Path) -> None:
    (run / "tensors" / "rank=0" / "loop").symlink_to("..", target_is_directory=True)


def _non_utf8_part(run: Path) -> None:
    rank = os.fsencode(_parts(run)[0].parent)
    shutil.copy(_parts(run)[0], os.fsdecode(rank + b"/part-\xff.parquet"))


def _stray_entries(run: Path) -> None:
    shutil.copytree(run / "tensors" / "rank=0", run / "tensors" / "rank=0.bak")
    (run / "tensors" / "rank=0" / "notes.csv").write_text("a,b\n1,2\n")
    (run / "tensors" / "rank=0" / "subdir").mkdir()
    (run / "steps" / "garbage").mkdir()
    (run / "tensors" / "rank=0" / "part-000077.parquet.tmp").write_bytes(b"half")


def _missing_rank(run: Path) -> None:
    _set_meta(run, world_size=2)


def _no_parts(run: Path) -> None:
    for table in ("tensors", "steps", "scalars", "hists"):
        shutil.rmtree(run / table, ignore_errors=True)


def _all_inf(run: Path) -> None:
    for table in ("tensors", "steps", "scalars"):
        for part in _parts(run, table):
            t = pq.read_table(part)
            cols = []
            for field in t.schema:
                col = t.column(field.name)
                if pa.types.is_floating(field.type) and field.name != "time":
                    col = pa.array(np.full(t.num_rows, np.inf), field.type)
                cols.append(col)
            pq.write_table(pa.Table.from_arrays(cols, schema=t.schema), part)


def _corrupt_cache(text: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / "analysis.json").write_text(text)

    return damage


HOSTILE = "\x1b[31mEVIL\x1b[0m\nforged: line\r\u202e<a href='https://evil.example'>x</a>"

FAULTS: dict[str, Callable[[Path], None]] = {
    **{f"truncate-tensors-{int(f * 100)}": _truncate("tensors", f) for f in (0.1, 0.5, 0.97)},
    **{f"truncate-steps-{int(f * 100)}": _truncate("steps", f) for f in (0.05, 0.6)},
    "zero-bytes": _zero_bytes,
    **{f"bitflip-{seed:02d}": _flip(seed) for seed in range(40)},
    "foreign-schema": _foreign_schema,
    "steps-schema-in-tensors": _steps_schema_in_tensors,
    "extra-column": _extra_column,
    "missing-column": _missing_column,
    "step-as-string": _step_as_string,
    "sumsq-as-string": _sumsq_as_string,
    "schema-version-99": _schema_version,
    "chmod-part": _chmod_part,
    "chmod-table": _chmod_table,
    "chmod-meta": _chmod_meta,
    "chmod-run": _chmod_run,
    "dangling-symlink": _dangling_symlink,
    "symlink-loop": _symlink_loop,
    "symlinked-dir-loop": _symlinked_table_loop,
    "non-utf8-part": _non_utf8_part,
    "stray-entries": _stray_entries,
    "missing-rank": _missing_rank,
    "no-parts": _no_parts,
    "all-inf": _all_inf,
    "meta-array": _raw_meta("[1, 2, 3]"),
    "meta-zero-bytes": _raw_meta(b""),
    "meta-not-utf8": _raw_meta(b'{"run_id": "\xff\xfe"}'),
    "meta-deep": _raw_meta("[" * 100_000 + "]" * 100_000),
    "meta-deep-field": _meta_deep_field,
    "meta-versions-list": _meta_fields(versions=["torch", 2]),
    "meta-world-size-str": _meta_fields(world_size="2"),
    "meta-world-size-huge": _meta_fields(world_size=10**30),
    "meta-pid-huge": _meta_fields(pid=10**30, status="running"),
    "meta-start-nan": _raw_meta('{"schema_version": 2, "start_time": NaN, "end_time": Infinity}'),
    "meta-hostile-strings": _meta_fields(
        run_id=HOSTILE,
        name=HOSTILE,
        status="crashed",
        error=HOSTILE,
        versions={"torch": HOSTILE},
        schedules={"grads": HOSTILE},
        config={HOSTILE: HOSTILE},
    ),
    "meta-catalogue-garbage": _meta_fields(
        tensors=[1, "x", {"name": 3}, {"name": "ok", "numel": -5}]
    ),
    "meta-huge-numbers": _meta_fields(
        start_time=1e308, end_time=-1e308, heartbeat=10**400 // 10**100
    ),
    "cache-deep": _corrupt_cache("[" * 100_000 + "]" * 100_000),
    "cache-wrong-types": _corrupt_cache('{"run_id": 3, "findings": "many", "provenance": []}'),
    "cache-garbage": _corrupt_cache("\x00\xff garbage"),
}

INTACT = ("good-a", "good-b")
FLIPS = [name for name in FAULTS if name.startswith("bitflip")]


@pytest.fixture(scope="module")
def batch() -> Iterator[Path]:
    """The batch: two intact runs and one damaged run per fault."""
    top = Path(tempfile.mkdtemp(prefix="gradlog-faults-"))
    root = top / "runs"
    template = _record(top / "template", "template")
    for name in INTACT:
        _record(root, name)
    for name, damage in FAULTS.items():
        run = root / f"bad-{name}"
        shutil.copytree(template, run, symlinks=True)
        _set_meta(run, run_id=f"bad-{name}", name=f"bad-{name}")
        damage(run)
    # a run directory whose name is not valid UTF-8, with intact data
    shutil.copytree(template, os.fsdecode(os.fsencode(root) + b"/good-\xff"), symlinks=True)
    # parts without meta.json: not a run, but it must be named, not skipped silently
    orphan = root / "orphan-parts"
    shutil.copytree(template / "tensors", orphan / "tensors")
    (top / "out").mkdir()
    yield root
    for p in top.rglob("*"):
        if not p.is_symlink():
            p.chmod(0o777)
    shutil.rmtree(top, ignore_errors=True)


def gradlog(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command as a user without root's power to read any file."""
    return cli.gradlog(*args, unprivileged=True, timeout=600)


def _no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]


def _clean_terminal_text(text: str) -> None:
    """No control character but newline, no bidi override, no lone surrogate."""
    bad = [
        ch
        for ch in text
        if (ord(ch) < 32 and ch != "\n")
        or 0x7F <= ord(ch) < 0xA0
        or ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
        or 0xD800 <= ord(ch) < 0xE000
    ]
    assert not bad, sorted(set(bad))


def _by_dir(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {Path(r["path"]).name: r for r in runs}


UNNAMED_OK = {"meta-huge-numbers", "cache-deep", "cache-wrong-types", "cache-garbage", *FLIPS}
"""Faults that may leave the run usable as it is: a flip in bytes nothing reads, huge but finite
times, a corrupt cached result (recomputed)."""

INTACT_DIRS = (*INTACT, "good-\udcff")


def _check_listing(runs: dict[str, dict[str, Any]], *, data_read: bool) -> None:
    """Intact runs in full, every fault named (``data_read``: the analysis's findings too)."""
    for name in INTACT_DIRS:
        assert runs[name]["steps"] == STEPS, runs[name]
        assert runs[name]["problems"] == [], runs[name]
        assert runs[name]["broken"] is None
    unnamed = [
        name
        for name in FAULTS
        if name not in UNNAMED_OK
        and name != "all-inf"
        and not (runs[f"bad-{name}"]["problems"] or runs[f"bad-{name}"]["broken"])
    ]
    assert not unnamed
    assert runs["orphan-parts"]["broken"]
    if data_read:  # every value +Inf: analysed, and said
        assert any("non-finite" in f["message"] for f in runs["bad-all-inf"]["findings"])
    assert "missing rank" in runs["bad-missing-rank"]["broken"]


def test_ls_lists_every_run_and_names_each_fault(batch: Path) -> None:
    r = gradlog("ls", batch, "--json")
    _no_traceback(r)
    assert r.returncode == 3, r.stderr
    runs = _by_dir(json.loads(r.stdout)["runs"])
    assert set(runs) == {*INTACT_DIRS, "orphan-parts", *(f"bad-{n}" for n in FAULTS)}
    _check_listing(runs, data_read=False)
    text = gradlog("ls", batch)
    _no_traceback(text)
    assert text.returncode == 3
    _clean_terminal_text(text.stdout + text.stderr)
    assert len(text.stdout.splitlines()) == len(runs) + 1  # a header and one line per run


def test_analyze_names_each_fault_and_analyses_the_rest_in_full(batch: Path) -> None:
    r = gradlog("analyze", batch, "--json", "--no-save")
    _no_traceback(r)
    assert r.returncode == 3, r.stderr
    runs = _by_dir(json.loads(r.stdout)["runs"])
    listed = _by_dir(json.loads(gradlog("ls", batch, "--json").stdout)["runs"])
    assert set(runs) == set(listed)
    _check_listing(runs, data_read=True)
    for name, run in runs.items():  # ls and analyze agree, unless reading the data found more
        if run["problems"] == listed[name]["problems"] and run["status"] != "unreadable":
            assert run["steps"] == listed[name]["steps"], name

    def outcome(run: dict[str, Any]) -> str:
        doc = json.dumps({k: run[k] for k in ("findings", "convergence", "steps")})
        return doc.replace(run["run_id"], "RUN")

    reference = outcome(runs["good-a"])
    assert outcome(runs["good-b"]) == reference  # the same seed records the same numbers
    for name in FLIPS:  # a flip is caught, or it landed where nothing reads: no silent change
        run = runs[f"bad-{name}"]
        assert run["broken"] or outcome(run) == reference, name
    text = gradlog("analyze", batch, "--no-save", "--allow-incomplete", "-v")
    _no_traceback(text)
    assert text.returncode == 0
    _clean_terminal_text(text.stdout + text.stderr)


def test_show_each_damaged_run(batch: Path) -> None:
    """``show`` of each damaged run (bit flips aside: ls and analyze cover them), and of every
    fifth in JSON: exit 3 exactly when ``ls`` calls the run broken, the same reason in JSON, a
    clean terminal."""
    listed = _by_dir(json.loads(gradlog("ls", batch, "--json").stdout)["runs"])
    names = ["orphan-parts", *(f"bad-{n}" for n in FAULTS if n not in FLIPS)]
    jobs = [(name, "text") for name in names] + [(name, "json") for name in names[::5]]
    with ThreadPoolExecutor(2) as pool:  # subprocesses: both cores
        done = pool.map(lambda job: gradlog("show", batch / job[0], "--format", job[1]), jobs)
        results = dict(zip(jobs, done, strict=True))
    failures = []
    for (name, fmt), r in results.items():
        want = 3 if listed[name]["broken"] else 0
        ok = "Traceback" not in r.stderr and r.returncode == want
        if fmt == "json":
            ok = ok and json.loads(r.stdout)["broken"] == listed[name]["broken"]
        else:
            ok = ok and not any(ord(c) < 32 and c != "\n" for c in r.stdout + r.stderr)
        if not ok:
            failures.append((name, fmt, r.returncode, r.stderr[-500:]))
    assert not failures


def test_report_writes_a_page_for_every_run(batch: Path) -> None:
    out = batch.parent / "out" / "index.html"
    r = gradlog("report", batch, "-o", out)
    _no_traceback(r)
    assert r.returncode == 3, r.stderr
    _clean_terminal_text(r.stdout + r.stderr)
    assert out.is_file()
    pages = list((out.parent / "runs").glob("*.html"))
    assert len(pages) == len(FAULTS) + len(INTACT_DIRS) + 1
    for name in ("cache-deep", "cache-wrong-types", "cache-garbage"):  # recomputed and saved
        saved = json.loads((batch / f"bad-{name}" / "analysis.json").read_text())
        assert saved["run_id"] == f"bad-{name}"
