"""Part files read for display: one part at a time with pyarrow, as numpy columns.

The per-(step, tensor) tables of a long run hold hundreds of millions of rows, but a report draws a
few hundred columns of them. The readers here hand over one part at a time so that the caller can
fold it onto its display grid (:mod:`gradlog.report.decimate`) and let it go. Dictionary-encoded
names stay integer codes (decoding 200M names to strings is most of the cost of a naive scan); a
small lookup maps each part's dictionary to stable ids.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from gradlog.analysis.decimate import run_starts
from gradlog.schema import HIST_BINS, STAT_KINDS

IntArray = npt.NDArray[np.int64]
T = TypeVar("T")

KIND_IDS = {k: i for i, k in enumerate(STAT_KINDS)}
"""Integer ids of the ``kind`` values: grad 0, param 1, update 2 (anything else -1)."""
GRAD, PARAM, UPDATE = (KIND_IDS[k] for k in ("grad", "param", "update"))


class Names:
    """Tensor names met while reading, each with a stable id (numbered as first met).

    Thread-safe: parts are decoded on reader threads.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []
        self._lock = threading.Lock()

    def lookup(self, words: list[str]) -> list[int]:
        """The id of each of ``words``, numbering the new ones."""
        with self._lock:
            for w in words:
                if w not in self.ids:
                    self.ids[w] = len(self.names)
                    self.names.append(w)
            return [self.ids[w] for w in words]

    def codes(self, column: pa.ChunkedArray) -> IntArray:
        """The id of each value of a (dictionary-encoded or plain) string column."""
        return _expand(*_runs(column, self.lookup))


def _runs(
    column: pa.ChunkedArray, lookup: Callable[[list[str]], list[int]]
) -> tuple[IntArray, IntArray, int]:
    """(first row, id) of each run of equal values of a string column, and its length.

    Rows inside a part are sorted by kind and tensor, so a part of a million rows holds a few
    hundred runs: ids are taken once per run and repeated, not gathered row by row.
    """
    starts: list[IntArray] = []
    ids: list[IntArray] = []
    offset = 0
    for chunk in column.chunks:
        arr = chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
        lut = np.array(lookup([str(w) for w in arr.dictionary.to_pylist()]) or [-1], np.int64)
        idx = arr.indices.to_numpy(zero_copy_only=False)
        first = run_starts(idx)
        starts.append(first + offset)
        ids.append(lut[idx[first]])
        offset += len(arr)
    if not starts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    start, value = np.concatenate(starts), np.concatenate(ids)
    keep = np.concatenate(([True], value[1:] != value[:-1]))  # runs split only by chunking
    return start[keep], value[keep], offset


def _expand(start: IntArray, value: IntArray, n: int) -> IntArray:
    return np.repeat(value, np.diff(np.append(start, n)))


def _kind_runs(column: pa.ChunkedArray) -> tuple[IntArray, IntArray, int]:
    return _runs(column, lambda words: [KIND_IDS.get(w, -1) for w in words])


def kind_codes(column: pa.ChunkedArray) -> IntArray:
    """:data:`KIND_IDS` of each value of a ``kind`` column."""
    return _expand(*_kind_runs(column))


def prefetch(fn: Callable[[Path], T | None], files: Iterable[Path], depth: int = 2) -> Iterator[T]:
    """``fn`` of each file, in order, computed ``depth`` files ahead on reader threads.

    pyarrow and numpy release the GIL while they decode and copy, so reading the next parts
    overlaps folding the current one. At most ``depth + 1`` parts are held at once.
    """
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="gradlog-read") as pool:
        todo = iter(files)
        ahead: deque[Future[T | None]] = deque(
            pool.submit(fn, f) for f in itertools.islice(todo, depth)
        )
        while ahead:
            result = ahead.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append(pool.submit(fn, nxt))
            if result is not None:
                yield result


def _numpy(column: pa.ChunkedArray, dtype: type[Any]) -> npt.NDArray[Any]:
    return np.asarray(column.to_numpy(), dtype=dtype)


@dataclass
class StatRows:
    """Rows of one kind of the ``tensors`` table: tensor ids, steps and the columns read."""

    tensor: IntArray
    step: IntArray
    sumsq: npt.NDArray[np.floating[Any]]
    nonfinite: IntArray

    def __len__(self) -> int:
        return len(self.step)

    def take(self, idx: slice | npt.NDArray[Any]) -> StatRows:
        return StatRows(self.tensor[idx], self.step[idx], self.sumsq[idx], self.nonfinite[idx])

    @staticmethod
    def concat(parts: Iterable[StatRows]) -> StatRows:
        ps = list(parts)
        return StatRows(
            *(np.concatenate([getattr(p, f) for p in ps]) for f in StatRows.__dataclass_fields__)
        )


STAT_COLUMNS = ["step", "tensor", "kind", "sumsq", "nonfinite"]


def stat_rows(table: pa.Table, names: Names) -> dict[int, StatRows]:
    """The rows of ``table`` (``tensors`` columns) split by kind id."""
    cols = StatRows(
        names.codes(table.column("tensor")),
        _numpy(table.column("step"), np.int64),
        table.column("sumsq").to_numpy(),  # float32 as stored; widened per cell, not per row
        _numpy(table.column("nonfinite"), np.int64),
    )
    start, kind, n = _kind_runs(table.column("kind"))
    end = np.append(start[1:], n)
    out: dict[int, StatRows] = {}
    for k in (GRAD, PARAM, UPDATE):
        runs = np.flatnonzero(kind == k)
        if len(runs) == 1:  # rows are sorted by kind inside a part: one slice, no copy
            out[k] = cols.take(slice(int(start[runs[0]]), int(end[runs[0]])))
        elif len(runs):
            out[k] = cols.take(np.concatenate([np.arange(start[r], end[r]) for r in runs]))
    return out


def read_part(
    path: Path, columns: list[str], drop: npt.NDArray[np.int64] | None = None
) -> pa.Table | None:
    """``columns`` of one part without the rows at positions ``drop`` (rows a later part
    recorded again: ``RunData.superseded``), or None when the part cannot be read (the analysis
    reports it)."""
    try:
        table = pq.read_table(path, columns=columns, use_threads=False)
    except (OSError, pa.ArrowException):
        return None
    if drop is not None and len(drop):
        keep = np.ones(table.num_rows, dtype=bool)
        keep[drop[drop < table.num_rows]] = False
        table = table.filter(pa.array(keep))
    return table


def read_stat_part(
    path: Path, names: Names, drop: npt.NDArray[np.int64] | None = None
) -> dict[int, StatRows] | None:
    """The ``tensors`` rows of one part (less the rows at ``drop``), split by kind (None when
    unreadable or empty)."""
    table = read_part(path, STAT_COLUMNS, drop)
    return stat_rows(table, names) if table is not None and table.num_rows else None


@dataclass
class HistRows:
    """Gradient rows of the ``hists`` table: tensor ids, steps and rows of HIST_BINS counts."""

    tensor: IntArray
    step: IntArray
    bins: npt.NDArray[np.int64]


def read_hist_part(
    path: Path, names: Names, drop: npt.NDArray[np.int64] | None = None
) -> HistRows | None:
    """The gradient histograms of one part, less the rows at ``drop`` (None when unreadable or
    without any)."""
    table = read_part(path, ["step", "tensor", "kind", "bins"], drop)
    if table is None or not table.num_rows:
        return None
    grad = np.flatnonzero(kind_codes(table.column("kind")) == GRAD)
    if not len(grad):
        return None
    if len(grad) < table.num_rows:
        table = table.take(pa.array(grad))
    chunks = [c.flatten() for c in table.column("bins").chunks]  # list -> its values, in order
    bins = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)  # one chunk: no copy
    counts = np.asarray(bins.to_numpy(zero_copy_only=False), dtype=np.int64)
    if counts.size != table.num_rows * HIST_BINS:
        return None  # not this format's histograms: the analysis reports the part
    return HistRows(
        names.codes(table.column("tensor")),
        _numpy(table.column("step"), np.int64),
        counts.reshape(table.num_rows, HIST_BINS),
    )
