"""The gradlog log format, declared once.

Every column of every table is declared here with its type and meaning. The recorder derives its
Arrow schema from it (:func:`arrow_schema`) and the analysis derives its polars schema from it
(:func:`polars_schema`); neither stage imports the other. This module imports neither pyarrow nor
polars at import time, so both stages can share it.

A run is a directory::

    <root>/<run_id>/meta.json
    <root>/<run_id>/<table>/rank=<r>/part-<n>.parquet

Parts are written under a hidden temporary name (``.part-<n>.parquet.tmp``) and renamed into
place only when complete, so readers only ever see whole parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = 3
"""Bumped on any incompatible change to a table or to meta.json (2: the ``run_id`` column;
floats without BYTE_STREAM_SPLIT, which Spark 4.0 cannot read; 3: ``tensors`` without ``min`` and
``max``, ``sum`` and ``steps.grad_norm`` as float64, so that no statistic saturates and a
``tensors`` row fits 16 bytes)."""

READABLE_VERSIONS = (2, 3)
"""Schema versions this gradlog reads: version 2 parts differ only in their ``tensors`` and
``steps`` tables (see :func:`table_at`)."""

META_FILE = "meta.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"

# The log2-exponent histogram: bin 0 counts zeros, bins 1..EXP_BINS count |x| in [2**k, 2**(k+1))
# for k = EXP_MIN..EXP_MAX (the whole float32 range, subnormals included, so it covers fp8, fp16,
# bf16 and fp32), and the last bin counts NaN and +-Inf. float64 values outside the float32 range
# are clamped into the first/last exponent bin.
EXP_MIN = -149
EXP_MAX = 127
EXP_BINS = EXP_MAX - EXP_MIN + 1
HIST_BINS = EXP_BINS + 2
HIST_ZERO_BIN = 0
HIST_NONFINITE_BIN = HIST_BINS - 1

STAT_KINDS = ("grad", "param", "update")
"""Values of the ``kind`` column: the gradient, the parameter (before the step) and the update
(parameter after the step minus before)."""

ColumnType = Literal["int64", "int32", "float64", "float32", "bool", "string", "dict", "hist"]


@dataclass(frozen=True)
class Column:
    """One column: its name, its logical type and what it means."""

    name: str
    type: ColumnType
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    """One table of a run: its directory name, its columns and its sort key within a part."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    sort_key: tuple[str, ...]

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Column names in schema order."""
        return [c.name for c in self.columns]


_STEP = Column(
    "step",
    "int64",
    "Optimizer step index, 0-based (one per optimizer.step() call, or per Recorder.step() call "
    "in a loop without an optimizer).",
)
_TENSOR = Column("tensor", "dict", "Parameter name as in model.named_parameters().")
_KIND = Column(
    "kind",
    "dict",
    "What the statistics describe: 'grad' (the step's gradient after accumulation and AMP "
    "unscaling, before any clipping; with a closure, that of its first evaluation), 'param' "
    "(before the update) or 'update' (after minus before).",
)

_RUN_ID = Column(
    "run_id",
    "dict",
    "The run's id (meta.json run_id, its directory name), in every row (one dictionary entry "
    "per part, so it costs almost nothing): queries over many runs need no file paths.",
)

_COUNT = Column("count", "int64", "Number of elements (numel), NaN and Inf included.")
_ZEROS = Column("zeros", "int64", "Number of elements equal to zero (+0 or -0).")
_NONFINITE = Column("nonfinite", "int64", "Number of NaN, +Inf and -Inf elements.")

STAT_COLUMNS: tuple[Column, ...] = (
    _COUNT,
    Column(
        "sum",
        "float64",
        "Sum of the finite elements (float64, like sumsq and absmax: no statistic saturates for "
        "any float32 or float64 tensor; values within the float32 range are stored at float32 "
        "precision, so they compress like float32).",
    ),
    Column("sumsq", "float64", "Sum of squares of the finite elements."),
    Column("absmax", "float64", "Largest |x| over finite elements; 0 when there is none."),
    _ZEROS,
    _NONFINITE,
)
"""Mergeable sufficient statistics: counts and sums add, absmax takes the max."""

RECORDED_STATS = tuple(c.name for c in STAT_COLUMNS)
"""What the recorder's statistics kernels compute per tensor, in this order (one float64 row
each): the statistics the ``tensors`` table stores (:data:`STAT_COLUMNS`), nothing more."""

TENSORS = Table(
    name="tensors",
    doc="Per (step, tensor, kind) sufficient statistics of gradients, parameters and updates.",
    columns=(_STEP, _TENSOR, _KIND, *STAT_COLUMNS, _RUN_ID),
    sort_key=("kind", "tensor", "step"),
)

HISTS = Table(
    name="hists",
    doc="Per (step, tensor, kind) log2-exponent histograms of |x| (see HIST_BINS).",
    columns=(
        _STEP,
        _TENSOR,
        _KIND,
        Column("bins", "hist", "Counts: [zeros, 2**-149.., ..2**127, non-finite]."),
        _RUN_ID,
    ),
    sort_key=("kind", "tensor", "step"),
)

_GRAD_NORM = Column(
    "grad_norm",
    "float64",
    "Global L2 norm of the gradients the optimizer applied (after any clipping; the norm before "
    "it is the scalar 'grad_norm_preclip'); NaN when any gradient element is non-finite; null "
    "when no optimizer parameter had a gradient.",
    nullable=True,
)

STEPS = Table(
    name="steps",
    doc="One row per optimizer step.",
    columns=(
        _STEP,
        Column("time", "float64", "Wall time (Unix seconds) when the step's gradients were seen."),
        _GRAD_NORM,
        Column("grads_none", "int32", "Optimizer parameters whose .grad was None at this step."),
        Column("loss_scale", "float32", "AMP GradScaler scale used for this step.", nullable=True),
        Column(
            "skipped",
            "bool",
            "True when the GradScaler skipped the optimizer step (non-finite gradients).",
            nullable=True,
        ),
        Column(
            "tensor_stats",
            "bool",
            "True when per-tensor gradient statistics were recorded for this step.",
        ),
        _RUN_ID,
    ),
    sort_key=("step",),
)

SCALARS = Table(
    name="scalars",
    doc="Scalars per step: values passed to Recorder.log(), learning rates ('lr/<group>') and, "
    "on steps whose gradients were clipped, 'grad_norm_preclip' (global L2 norm before the "
    "clip) and 'grad_clip_limit' (max_norm or clip_value).",
    columns=(
        _STEP,
        Column("name", "dict", "Scalar name as passed to Recorder.log()."),
        Column("value", "float64", "Scalar value."),
        _RUN_ID,
    ),
    sort_key=("name", "step"),
)

TABLES: dict[str, Table] = {t.name: t for t in (TENSORS, HISTS, STEPS, SCALARS)}

_TENSORS_V2 = Table(
    name="tensors",
    doc=TENSORS.doc,
    columns=(
        _STEP,
        _TENSOR,
        _KIND,
        _COUNT,
        Column("sum", "float32", "Sum of the finite elements (saturates beyond float32)."),
        TENSORS.column("sumsq"),
        Column("min", "float32", "Smallest finite element; +inf when there is none."),
        Column("max", "float32", "Largest finite element; -inf when there is none."),
        TENSORS.column("absmax"),
        _ZEROS,
        _NONFINITE,
        _RUN_ID,
    ),
    sort_key=TENSORS.sort_key,
)
"""The ``tensors`` table of schema version 2: also ``min`` and ``max``, ``sum`` as float32."""


_STEPS_V2 = Table(
    name="steps",
    doc=STEPS.doc,
    columns=tuple(
        Column(c.name, "float32", c.doc, nullable=True) if c.name == "grad_norm" else c
        for c in STEPS.columns
    ),
    sort_key=STEPS.sort_key,
)
"""The ``steps`` table of schema version 2: ``grad_norm`` as float32 (inf beyond 3.4e38)."""


def table_at(table: Table, version: int) -> Table:
    """``table`` as written by schema ``version`` (one of :data:`READABLE_VERSIONS`): readers
    check a part against it, then read only the current columns (floats widened)."""
    if version == 2:
        return {"tensors": _TENSORS_V2, "steps": _STEPS_V2}.get(table.name, table)
    return table


META_FIELDS: dict[str, str] = {
    "schema_version": "int: SCHEMA_VERSION of the writer.",
    "run_id": "str: directory name, unique under the root.",
    "name": "str: the name the user gave (may contain any text; always escape it).",
    "status": "str: 'running', 'finished', 'crashed' or 'interrupted' (KeyboardInterrupt; "
    "SystemExit(0) is 'finished'); a 'running' run whose heartbeat is old or whose process is "
    "gone is reported as crashed by readers.",
    "start_time": "float: Unix seconds.",
    "end_time": "float | null: Unix seconds, set on close.",
    "heartbeat": "float: Unix seconds of the last meta.json write.",
    "versions": "dict: gradlog, torch, python.",
    "host": "str: hostname.",
    "pid": "int: recording process id.",
    "world_size": "int: torch.distributed world size (1 when not distributed).",
    "rank": "int: this process's rank.",
    "config": "dict: the user's hyperparameters, JSON-sanitised.",
    "optimizer": "dict | null: class and param-group hyperparameters (without the params); "
    "null for a loop without an optimizer.",
    "tensors": "list: the tensor catalogue, one dict per parameter (see CATALOGUE_FIELDS).",
    "schedules": "dict: which steps each statistic is recorded on (descriptions).",
    "counters": "dict: steps recorded, rows written, parts, bytes, dropped steps/rows, I/O "
    "errors, and scalars passed to log() that were dropped (dropped_scalars).",
    "errors": "list[str]: writer errors, newest last (bounded).",
    "error": "str: why the run crashed (the exception that ended it), set on close; absent "
    "otherwise.",
    "argv": "list[str]: the recording process's command line (at most 64 entries).",
    "scaler": "str | null: class name of the AMP GradScaler recorded with, null without one.",
    "first_step": "int: the first step this process recorded (0, Recorder(first_step=), or after "
    "the last step of the run it resumed).",
    "last_step": "int: the last step this process recorded so far (-1 before the first).",
    "resumes": "list[dict]: for a resumed run (same run_id, a later process), what each earlier "
    "process left: pid, host, start/end time, status, error, first/last step, counters.",
}

MetaType = Literal["int", "float", "str", "dict", "list", "null"]

META_TYPES: dict[str, tuple[MetaType, ...]] = {
    "schema_version": ("int",),
    "run_id": ("str",),
    "name": ("str",),
    "status": ("str",),
    "start_time": ("float",),
    "end_time": ("float", "null"),
    "heartbeat": ("float",),
    "versions": ("dict",),
    "host": ("str",),
    "pid": ("int",),
    "world_size": ("int",),
    "rank": ("int",),
    "config": ("dict",),
    "optimizer": ("dict", "null"),
    "tensors": ("list",),
    "schedules": ("dict",),
    "counters": ("dict",),
    "errors": ("list",),
    "error": ("str",),
    "argv": ("list",),
    "scaler": ("str", "null"),
    "first_step": ("int",),
    "last_step": ("int",),
    "resumes": ("list",),
}
"""The JSON types each meta.json field may hold ("float" accepts integers too); readers check
them (gradlog/rundir.py) and leave out, naming it, a field of another type."""

CATALOGUE_FIELDS: dict[str, str] = {
    "name": "Parameter name (torch.compile's '_orig_mod.' prefix removed).",
    "shape": "list[int]",
    "numel": "int",
    "dtype": "str, e.g. 'float32'",
    "module_type": "Class name of the owning module, e.g. 'Conv2d'.",
    "requires_grad": "bool",
    "in_optimizer": "bool: whether any optimizer param group holds it (without an optimizer: "
    "whether it requires a gradient).",
    "depth": "int: definition order in the model (0 = first registered, usually input side).",
    "backward_order": "int | null: order in which its gradient was accumulated in the first "
    "recorded backward pass (0 = first = output side); null when unknown.",
    "not_recorded": "str | null: why its statistics are not recorded (e.g. 'complex (complex64)'); "
    "null when they are.",
}


def _arrow_type(t: ColumnType) -> pa.DataType:
    import pyarrow as pa

    return {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "dict": pa.dictionary(pa.int32(), pa.string()),
        "hist": pa.list_(pa.int64(), HIST_BINS),
    }[t]


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema the recorder writes for ``table``."""
    import pyarrow as pa

    fields = [pa.field(c.name, _arrow_type(c.type), nullable=c.nullable) for c in table.columns]
    return pa.schema(fields, metadata={"gradlog_schema_version": str(SCHEMA_VERSION)})


def polars_schema(table: Table) -> dict[str, Any]:
    """The polars schema the analysis reads ``table`` with (dictionary strings become String)."""
    import polars as pl

    mapping: dict[ColumnType, Any] = {
        "int64": pl.Int64,
        "int32": pl.Int32,
        "float64": pl.Float64,
        "float32": pl.Float32,
        "bool": pl.Boolean,
        "string": pl.String,
        "dict": pl.String,
        "hist": pl.Array(pl.Int64, HIST_BINS),
    }
    return {c.name: mapping[c.type] for c in table.columns}


def part_name(index: int) -> str:
    """File name of the ``index``-th part of a table."""
    return f"{PART_PREFIX}{index:06d}{PART_SUFFIX}"


def markdown_tables() -> str:
    """The Markdown reference of every table and of meta.json (embedded in docs/FORMAT.md)."""
    type_names = {
        "dict": "string (dictionary-encoded)",
        "hist": f"fixed_size_list<int64>[{HIST_BINS}]",
    }

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out: list[str] = []
    for t in TABLES.values():
        out += [
            f"### `{t.name}/rank=<r>/part-<n>.parquet`",
            "",
            f"{t.doc} Rows in a part are sorted by {', '.join(t.sort_key)}.",
            "",
            "| column | type | meaning |",
            "|---|---|---|",
        ]
        for c in t.columns:
            kind = type_names.get(c.type, c.type) + (" (nullable)" if c.nullable else "")
            out.append(f"| `{c.name}` | {kind} | {cell(c.doc)} |")
        out.append("")
    out += ["### `meta.json`", "", "| field | meaning |", "|---|---|"]
    out += [f"| `{k}` | {cell(v)} |" for k, v in META_FIELDS.items()]
    out += ["", "Each entry of `tensors` (the catalogue):", "", "| field | meaning |", "|---|---|"]
    out += [f"| `{k}` | {cell(v)} |" for k, v in CATALOGUE_FIELDS.items()]
    return "\n".join(out) + "\n"


def regenerate_format_doc(path: str) -> None:
    """Replace everything after ``## Tables`` in ``path`` (docs/FORMAT.md) with
    :func:`markdown_tables` (``python -m gradlog.schema docs/FORMAT.md``)."""
    from pathlib import Path

    doc = Path(path).read_text(encoding="utf-8")
    head, sep, _ = doc.partition("## Tables\n\n")
    if not sep:
        raise ValueError(f"{path} has no '## Tables' section")
    Path(path).write_text(head + sep + markdown_tables(), encoding="utf-8")


if __name__ == "__main__":
    import sys

    regenerate_format_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/FORMAT.md")
