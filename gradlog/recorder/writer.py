"""The background writer: decodes step packets into columns and writes crash-safe Parquet parts.

The training thread only appends a packet to a byte-bounded queue (:meth:`Writer.submit`). This
thread waits for the packet's device copy, decodes it column-wise into numpy arrays, and writes a
part per table when a rotation is due. A part is written to a hidden temporary file, fsynced and
renamed into place, so readers only ever see complete parts; I/O errors drop that part's rows and
count them instead of reaching the training loop.
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradlog.recorder.norms import norm_from_sumsq
from gradlog.schema import (
    HIST_BINS,
    HISTS,
    RECORDED_STATS,
    SCALARS,
    STAT_KINDS,
    STEPS,
    TENSORS,
    TMP_SUFFIX,
    Table,
    arrow_schema,
    part_name,
)

NSTATS = len(RECORDED_STATS)
_SUMSQ = RECORDED_STATS.index("sumsq")
_NONFINITE = RECORDED_STATS.index("nonfinite")
_FLOAT_COLS = {"sum", "sumsq", "absmax"}
MAX_ERRORS_KEPT = 20


def parquet_options(compression_level: int = 3) -> dict[str, Any]:
    """The ``pyarrow.parquet.write_table`` options every part is written with."""
    return {
        "compression": "zstd",
        "compression_level": compression_level,
        "use_dictionary": ["tensor", "kind", "name", "count", "run_id"],
        # No BYTE_STREAM_SPLIT: Spark 4.0's reader rejects it; delta-coded steps win back part
        # of its cost (BENCHMARKS.md, bytes on disk per row).
        "use_byte_stream_split": False,
        "column_encoding": {"step": "DELTA_BINARY_PACKED"},
        "write_statistics": ["step"],
        "write_page_checksum": True,  # readers verify pages (CRC32): flips are caught
        "row_group_size": 1 << 20,
    }


def stat_floats(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    """A statistics column: -0.0 stored as 0.0; a float64 column holds float32 precision where
    float32 holds the value (so it compresses like float32) and full float64 beyond it."""
    v = np.asarray(values, dtype=np.float64) + 0.0  # -0.0 + 0.0 == +0.0
    if pa.types.is_float64(typ):
        with np.errstate(over="ignore"):
            v32 = v.astype(np.float32)
        v = np.where(np.isfinite(v32) | ~np.isfinite(v), v32.astype(np.float64), v)
    return pa.array(v).cast(typ)


_VALID = "__valid"


@dataclass
class Segment:
    """A slice of a packet's host buffer and what it holds.

    ``what`` is 'stats' or 'hist' (rows for ``tensors`` of ``kind``), 'scalars' (values for
    ``names``), 'grad_norm', 'grad_norm_preclip' or 'loss_scale' (one value). ``norm_rows``
    marks the gradient statistics rows whose sums of squares make up the global gradient norm,
    stored as ``norm_name``: the steps table's grad_norm, or the scalar grad_norm_preclip when
    the statistics were taken before a clip.
    """

    what: str
    offset: int
    length: int
    kind: int = 0
    tensors: np.ndarray | None = None
    names: list[str] | None = None
    norm_rows: np.ndarray | None = None
    norm_name: str = "grad_norm"


@dataclass
class Packet:
    """Everything recorded for one optimizer step, with its statistics in one host buffer."""

    step: int
    time: float
    segments: list[Segment] = field(default_factory=list)
    buffer: Any = None  # numpy float64 vector, or a (pinned) torch tensor still being copied
    ready: Callable[[], None] | None = None  # waits for the device-to-host copy
    scalars: list[tuple[int, str, float]] = field(default_factory=list)  # (step, name, value)
    grads_none: int = 0
    tensor_stats: bool = False
    skipped: bool | None = None
    step_row: bool = True  # False for packets that only carry scalars logged outside a step

    @property
    def nbytes(self) -> int:
        size = 256 + 48 * len(self.scalars)
        if self.buffer is not None:
            size += int(self.buffer.nbytes) if hasattr(self.buffer, "nbytes") else 0
        return size


@dataclass
class Counters:
    """What the writer did; stored in meta.json."""

    steps_recorded: int = 0
    rows_written: int = 0
    parts_written: int = 0
    bytes_written: int = 0
    dropped_steps: int = 0
    dropped_rows: int = 0
    io_errors: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


class _TableBuffer:
    """Columns of one table accumulated as numpy chunks until the next part is written."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.chunks: dict[str, list[np.ndarray]] = {c: [] for c in self._keys()}
        self.rows = 0

    def _keys(self) -> list[str]:
        """Column names, plus a validity mask for each nullable float column (null = not
        recorded; a recorded NaN stays NaN)."""
        valid = [
            f"{c.name}{_VALID}" for c in self.table.columns if c.nullable and "float" in c.type
        ]
        return self.table.names + valid

    def append(self, columns: dict[str, np.ndarray]) -> None:
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        for name, values in columns.items():
            self.chunks[name].append(values)
        self.rows += n

    def take(self) -> tuple[dict[str, np.ndarray], int]:
        cols = {
            name: (np.concatenate(parts) if parts else np.empty(0))
            for name, parts in self.chunks.items()
        }
        rows = self.rows
        self.chunks = {c: [] for c in self._keys()}
        self.rows = 0
        return cols, rows


class Writer:
    """Owns the queue, the writer thread and the part files of one run and rank."""

    def __init__(
        self,
        run_dir: Path,
        rank: int,
        tensor_names: list[str],
        *,
        max_queue_bytes: int,
        flush_every_steps: int,
        flush_every_secs: float,
        drain_every_secs: float = 1.0,
        on_flush: Callable[[], None],
        compression_level: int = 3,
    ) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self.tensor_dictionary = pa.array(tensor_names, type=pa.string())
        self.kind_dictionary = pa.array(list(STAT_KINDS), type=pa.string())
        self.run_id_dictionary = pa.array([run_dir.name], type=pa.string())
        self.max_queue_bytes = max_queue_bytes
        self.flush_every_steps = flush_every_steps
        self.flush_every_secs = flush_every_secs
        self.drain_every_secs = min(drain_every_secs, flush_every_secs)
        self.compression_level = compression_level
        self.on_flush = on_flush
        self.counters = Counters()
        self.errors: list[str] = []
        self.pending_error: BaseException | None = None
        self._queue: collections.deque[Packet] = collections.deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._stop = False
        self._buffers = {t.name: _TableBuffer(t) for t in (TENSORS, HISTS, STEPS, SCALARS)}
        # A resumed run (same run id) continues the part numbers: nothing is ever overwritten.
        self._part_index = {
            name: _next_part_index(run_dir / name / f"rank={rank}") for name in self._buffers
        }
        self._steps_in_part = 0
        self._last_flush = time.monotonic()
        self._last_drain = self._last_flush
        self._flush_requested = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="gradlog-writer", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- training-thread side
    def submit(self, packet: Packet, *, block: bool = False) -> bool:
        """Queue ``packet``; False (and counted) when the queue is full and not ``block``."""
        size = packet.nbytes
        with self._cond:
            while self._queued_bytes + size > self.max_queue_bytes and self._queue:
                if not block or not self._thread.is_alive():
                    self.counters.dropped_steps += 1
                    return False
                self._cond.wait(0.05)
            self._queue.append(packet)
            self._queued_bytes += size
            self._idle.clear()
            if self._pressure():
                self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything queued so far as parts; returns False on timeout."""
        with self._cond:
            self._flush_requested = True
            self._idle.clear()
            self._cond.notify_all()
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain the queue, write the last parts and stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ----------------------------------------------------------------- writer-thread side
    def _run(self) -> None:
        """Wake about once per ``drain_every_secs`` (or when asked), decode everything queued,
        and write parts when a rotation is due. Waking per packet would make this thread take
        the GIL from the training thread at every step."""
        while True:
            with self._cond:
                while not (self._stop or self._flush_requested or self._pressure()):
                    now = time.monotonic()
                    timeout = min(
                        self.drain_every_secs - (now - self._last_drain),
                        self.flush_every_secs - (now - self._last_flush),
                    )
                    if timeout <= 0:
                        break
                    self._cond.wait(timeout)
                batch = list(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                self._cond.notify_all()
                stop = self._stop
                flush_requested = self._flush_requested
                self._flush_requested = False
            self._last_drain = time.monotonic()
            for packet in batch:
                self._guard(self._consume, packet)
                if self._steps_in_part >= self.flush_every_steps:
                    self._guard(self._write_parts)
            due = time.monotonic() - self._last_flush >= self.flush_every_secs
            if stop or flush_requested or due:
                self._guard(self._write_parts)
            with self._cond:
                if not self._queue and not self._flush_requested:
                    self._idle.set()
            if stop:
                return

    def _pressure(self) -> bool:
        """Drain now rather than at the next tick: a part rotation is due, or the queue holds a
        quarter of its byte budget."""
        rotation_due = len(self._queue) + self._steps_in_part >= self.flush_every_steps
        return rotation_due or self._queued_bytes * 4 >= self.max_queue_bytes

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn``; errors are recorded for the training thread to surface, never raised here."""
        try:
            fn(*args)
        except Exception as exc:
            self._record_error(exc)

    def _record_error(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.errors.append(text)
        del self.errors[:-MAX_ERRORS_KEPT]
        if not isinstance(exc, OSError):
            self.pending_error = exc
        else:
            self.counters.io_errors += 1
            self.pending_error = self.pending_error or exc

    def _consume(self, packet: Packet) -> None:
        try:
            if packet.ready is not None:
                packet.ready()
            buf = packet.buffer
            host = np.empty(0) if buf is None else np.asarray(buf, dtype=np.float64)
            self._decode(packet, host)
        except Exception:
            self.counters.dropped_steps += 1
            raise
        self.counters.steps_recorded += 1
        self._steps_in_part += 1

    def _decode(self, packet: Packet, host: np.ndarray) -> None:
        step = packet.step
        grad_norm = np.nan
        have_norm = False
        loss_scale = np.nan
        have_scale = False
        scalar_steps: list[np.ndarray] = []
        scalar_names: list[np.ndarray] = []
        scalar_values: list[np.ndarray] = []

        def scalar(name: str, value: float) -> None:
            scalar_steps.append(np.array([step], dtype=np.int64))
            scalar_names.append(np.array([name], dtype=object))
            scalar_values.append(np.array([value], dtype=np.float64))

        for seg in packet.segments:
            values = host[seg.offset : seg.offset + seg.length]
            if seg.what == "stats":
                assert seg.tensors is not None
                rows = values.reshape(-1, NSTATS)
                n = len(rows)
                cols: dict[str, np.ndarray] = {
                    "step": np.full(n, step, dtype=np.int64),
                    "tensor": seg.tensors.astype(np.int32),
                    "kind": np.full(n, seg.kind, dtype=np.int32),
                }
                for j, col in enumerate(RECORDED_STATS):  # a kernel's row: the stored columns
                    cols[col] = rows[:, j]
                self._buffers["tensors"].append(cols)
                if seg.norm_rows is not None and seg.norm_rows.any():
                    # The global norm from the per-tensor sums of squares (no extra device pass),
                    # by the rule of gradlog/recorder/norms.py.
                    chosen = rows[seg.norm_rows]
                    norm = norm_from_sumsq(chosen[:, _SUMSQ], chosen[:, _NONFINITE])
                    if seg.norm_name == "grad_norm":
                        grad_norm, have_norm = norm, True
                    else:
                        scalar(seg.norm_name, norm)
            elif seg.what == "hist":
                assert seg.tensors is not None
                rows = values.reshape(-1, HIST_BINS)
                n = len(rows)
                self._buffers["hists"].append(
                    {
                        "step": np.full(n, step, dtype=np.int64),
                        "tensor": seg.tensors.astype(np.int32),
                        "kind": np.full(n, seg.kind, dtype=np.int32),
                        "bins": rows.astype(np.int64),
                    }
                )
            elif seg.what == "grad_norm":
                grad_norm, have_norm = float(values[0]), True
            elif seg.what == "grad_norm_preclip":
                scalar("grad_norm_preclip", float(values[0]))
            elif seg.what == "loss_scale":
                loss_scale, have_scale = float(values[0]), True
            elif seg.what == "scalars":
                assert seg.names is not None
                scalar_steps.append(np.full(len(values), step, dtype=np.int64))
                scalar_names.append(np.array(seg.names, dtype=object))
                scalar_values.append(values.copy())
        if packet.scalars:
            scalar_steps.append(np.array([s for s, _, _ in packet.scalars], dtype=np.int64))
            scalar_names.append(np.array([n for _, n, _ in packet.scalars], dtype=object))
            scalar_values.append(np.array([v for _, _, v in packet.scalars], dtype=np.float64))
        if scalar_steps:
            self._buffers["scalars"].append(
                {
                    "step": np.concatenate(scalar_steps),
                    "name": np.concatenate(scalar_names),
                    "value": np.concatenate(scalar_values),
                }
            )
        if not packet.step_row:
            return
        self._buffers["steps"].append(
            {
                "step": np.array([step], dtype=np.int64),
                "time": np.array([packet.time]),
                "grad_norm": np.array([grad_norm]),
                f"grad_norm{_VALID}": np.array([have_norm]),
                "grads_none": np.array([packet.grads_none], dtype=np.int32),
                "loss_scale": np.array([loss_scale]),
                f"loss_scale{_VALID}": np.array([have_scale]),
                "skipped": np.array([packet.skipped], dtype=object),
                "tensor_stats": np.array([packet.tensor_stats]),
            }
        )

    # ----------------------------------------------------------------- parts
    def _write_parts(self) -> None:
        self._last_flush = time.monotonic()
        self._steps_in_part = 0
        wrote = False
        for name, buffer in self._buffers.items():
            if buffer.rows == 0:
                continue
            cols, rows = buffer.take()
            try:
                table = self._to_arrow(buffer.table, cols)
                self._write_part(name, table)
            except Exception as exc:  # disk full, quota, read-only, a bug: count the loss, go on
                self.counters.dropped_rows += rows
                self._record_error(exc)
            else:
                self.counters.rows_written += rows
                wrote = True
        if wrote:
            self.on_flush()

    def _to_arrow(self, table: Table, cols: dict[str, np.ndarray]) -> pa.Table:
        order: np.ndarray | None = None
        keys = [cols[k] for k in reversed(table.sort_key)]
        if table.name == "scalars":
            names = cols["name"]
            uniq, codes = np.unique(names.astype(str), return_inverse=True)
            keys = [cols["step"], codes]
        order = np.lexsort(keys)
        arrays: list[pa.Array] = []
        schema = arrow_schema(table)
        n_rows = len(order)
        for f in schema:
            if f.name == "run_id":  # one dictionary entry per part
                arrays.append(
                    pa.DictionaryArray.from_arrays(
                        pa.array(np.zeros(n_rows, dtype=np.int32)), self.run_id_dictionary
                    )
                )
                continue
            values = cols[f.name][order]
            if f.name == "tensor":
                arr: pa.Array = pa.DictionaryArray.from_arrays(
                    pa.array(values, type=pa.int32()), self.tensor_dictionary
                )
            elif f.name == "kind":
                arr = pa.DictionaryArray.from_arrays(
                    pa.array(values, type=pa.int32()), self.kind_dictionary
                )
            elif f.name == "name":
                arr = pa.DictionaryArray.from_arrays(
                    pa.array(codes[order], type=pa.int32()), pa.array(uniq.tolist(), pa.string())
                )
            elif f.name == "bins":
                flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=pa.int64())
                arr = pa.FixedSizeListArray.from_arrays(flat, HIST_BINS)
            elif f.name == "skipped":
                arr = pa.array(list(values), type=pa.bool_())
            elif f.nullable and pa.types.is_floating(f.type):
                missing = ~cols[f"{f.name}{_VALID}"][order].astype(bool)
                arr = pa.array(values.astype(np.float64), mask=missing).cast(f.type)
            elif f.name in _FLOAT_COLS:
                arr = stat_floats(values, f.type)
            else:
                arr = pa.array(values).cast(f.type)
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, schema=schema)

    def _write_part(self, name: str, table: pa.Table) -> None:
        directory = self.run_dir / name / f"rank={self.rank}"
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / part_name(self._part_index[name])
        self._part_index[name] += 1
        tmp = directory / f".{final.name}.{os.getpid()}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, **parquet_options(self.compression_level))
                f.flush()
                os.fsync(f.fileno())
            final = self._publish(tmp, final, name)
            _fsync_dir(directory)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.counters.parts_written += 1
        self.counters.bytes_written += final.stat().st_size

    def _publish(self, tmp: Path, final: Path, table: str) -> Path:
        """Give the complete part ``tmp`` its visible name without ever replacing a file: another
        process writing the same run and rank may have taken the number meanwhile."""
        for _ in range(1000):
            try:
                os.link(tmp, final)  # fails if ``final`` exists: exclusive, unlike a rename
            except FileExistsError:
                final = final.with_name(part_name(self._part_index[table]))
                self._part_index[table] += 1
                continue
            except OSError:  # no hard links here (some network and FUSE file systems)
                if final.exists():
                    final = final.with_name(part_name(self._part_index[table]))
                    self._part_index[table] += 1
                    continue
                os.replace(tmp, final)
                return final
            tmp.unlink()
            return final
        raise OSError(f"no free part number under {final.parent}")


_PART_NUMBER = re.compile(r"^\.?part-(\d+)\.parquet")


def _next_part_index(directory: Path) -> int:
    """One past the highest part number in ``directory`` (visible or temporary), 0 if none."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    numbers = [int(m.group(1)) for n in names if (m := _PART_NUMBER.match(n))]
    return max(numbers, default=-1) + 1


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
