"""The ``gradlog`` command. User mistakes become one clean line on stderr (exit 2), here only."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from gradlog.analysis.runinfo import RunInfo, find_runs, read_run_info
from gradlog.errors import GradlogError

F = TypeVar("F", bound=Callable[..., Any])


def _clean_errors(fn: F) -> F:
    """Turn GradlogError into ``gradlog: error: ...`` and exit code 2 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GradlogError as exc:
            click.echo(f"gradlog: error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="gradlog")
def main() -> None:
    """Record, analyze and report the gradients of PyTorch training runs."""


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover - unreachable


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _printable(text: str, limit: int = 40) -> str:
    """A one-line, control-character-free rendering of a user string for the terminal."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


@main.command("ls")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@_clean_errors
def ls_command(root: Path, as_json: bool) -> None:
    """List the runs under ROOT: run, name, status, steps, tensors, size."""
    infos: list[RunInfo] = [read_run_info(p) for p in find_runs(root)]
    if as_json:
        click.echo(json.dumps({"runs": [i.to_json() for i in infos]}, indent=1))
        return
    if not infos:
        click.echo(f"no runs under {root}")
        return
    rows = [
        [
            i.run_id,
            _printable(i.name),
            i.status,
            str(i.steps),
            str(i.tensors),
            _human_bytes(i.size_bytes),
        ]
        for i in infos
    ]
    click.echo(_table(rows, ["run", "name", "status", "steps", "tensors", "size"]))
    problems = [i for i in infos if i.problems]
    for i in problems:
        for p in i.problems:
            click.echo(f"warning: {i.run_id}: {p}", err=True)


@main.command("show")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@_clean_errors
def show_command(run: Path, as_json: bool) -> None:
    """Summarise one run: its meta.json and what its parts hold."""
    info = read_run_info(run)
    if as_json:
        click.echo(json.dumps(info.to_json(detail=True), indent=1))
        return
    meta = info.meta
    lines = [
        f"run        {info.run_id}",
        f"name       {_printable(info.name, 200)}",
        f"status     {info.status}",
        f"steps      {info.steps}",
        f"tensors    {info.tensors}",
        f"size       {_human_bytes(info.size_bytes)} in {info.parts} parts",
        f"duration   {info.duration_text}",
        f"versions   {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}",
        f"host       {_printable(str(meta.get('host', '?')), 80)}  "
        f"(world size {meta.get('world_size', 1)})",
        f"optimizer  {_printable(str(meta.get('optimizer', {}).get('class', '?')))}",
        f"schedules  {', '.join(f'{k}={v}' for k, v in meta.get('schedules', {}).items())}",
    ]
    config = meta.get("config") or {}
    if config:
        lines.append("config")
        lines += [
            f"  {_printable(str(k))} = {_printable(json.dumps(v), 80)}" for k, v in config.items()
        ]
    counters = meta.get("counters") or {}
    dropped = counters.get("dropped_steps", 0) + counters.get("dropped_rows", 0)
    if dropped:
        lines.append(
            f"dropped    {counters.get('dropped_steps', 0)} steps, "
            f"{counters.get('dropped_rows', 0)} rows (see meta.json errors)"
        )
    for p in info.problems:
        lines.append(f"problem    {p}")
    click.echo("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    main()
