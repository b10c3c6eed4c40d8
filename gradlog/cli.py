"""The ``gradlog`` command. User mistakes become one clean line on stderr (exit 2), here only."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from gradlog.errors import ConfigError, GradlogError
from gradlog.rundir import Run, find_runs, open_run

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


def _duration_text(d: float | None) -> str:
    if d is None:
        return "?"
    minutes, seconds = divmod(round(d), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


@main.command("ls")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@_clean_errors
def ls_command(root: Path, as_json: bool) -> None:
    """List the runs under ROOT: run, name, status, steps, tensors, size."""
    infos: list[Run] = [open_run(p) for p in find_runs(root)]
    if as_json:
        click.echo(json.dumps({"runs": [i.summary() for i in infos]}, indent=1))
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
            str(len(i.catalogue)),
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
    info = open_run(run).require()
    if as_json:
        click.echo(json.dumps(info.summary(detail=True), indent=1))
        return
    meta = info.meta
    summary = info.summary()
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    schedules = ", ".join(f"{k}={v}" for k, v in meta.get("schedules", {}).items())
    lines = [
        f"run        {info.run_id}",
        f"name       {_printable(info.name, 200)}",
        f"status     {info.status}",
        f"steps      {info.steps}",
        f"tensors    {summary['tensors']}",
        f"size       {_human_bytes(summary['size_bytes'])} in {summary['parts']} parts",
        f"duration   {_duration_text(info.duration_s)}",
        f"versions   {_printable(versions, 200)}",
        f"host       {_printable(str(meta.get('host', '?')), 80)}  (world size {info.world_size})",
        f"optimizer  {_printable(str((meta.get('optimizer') or {}).get('class', '?')))}",
        f"schedules  {_printable(schedules, 200)}",
    ]
    config = meta.get("config") or {}
    if config:
        lines.append("config")
        lines += [
            f"  {_printable(str(k))} = {_printable(json.dumps(v), 80)}" for k, v in config.items()
        ]
    counters = meta.get("counters") or {}
    dropped_steps, dropped_rows = (
        n if isinstance(n := counters.get(k, 0), int) else 0
        for k in ("dropped_steps", "dropped_rows")
    )
    if dropped_steps or dropped_rows:
        lines.append(
            f"dropped    {dropped_steps} steps, {dropped_rows} rows (see meta.json errors)"
        )
    for p in info.problems:
        lines.append(f"problem    {p}")
    click.echo("\n".join(lines))


_SEVERITIES = ("warning", "error")


def _analysis_config(config_file: Path | None, settings: tuple[str, ...]) -> Any:
    """The effective analysis config: defaults, then the TOML file, then each --set."""
    from gradlog.analysis import AnalysisConfig

    cfg = AnalysisConfig.from_toml(config_file) if config_file else AnalysisConfig()
    overrides: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes NAME=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    return cfg.replace(**overrides) if overrides else cfg


_CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML file of analysis thresholds.",
)
_SET_OPTION = click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override one threshold (repeatable), e.g. --set spike_z=8.",
)


@main.command("analyze")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option(
    "--fail-on",
    type=click.Choice(_SEVERITIES),
    default=None,
    help="Exit 1 when a finding reaches this severity.",
)
@_CONFIG_OPTION
@_SET_OPTION
@click.option("--no-save", is_flag=True, help="Do not write <run>/analysis.json.")
@_clean_errors
def analyze_command(
    *,
    paths: tuple[Path, ...],
    as_json: bool,
    fail_on: str | None,
    config_file: Path | None,
    settings: tuple[str, ...],
    no_save: bool,
) -> None:
    """Run the detectors, trends and hints over the runs under PATHS."""
    from gradlog.analysis import Severity, analyze

    cfg = _analysis_config(config_file, settings)
    result = analyze(list(paths), cfg, progress=True, save=not no_save)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1, allow_nan=False))
    else:
        click.echo(analysis_text(result))
    if fail_on is not None:
        limit = Severity(fail_on)
        if any(f.severity >= limit for f in result.findings):
            sys.exit(1)


def analysis_text(result: Any) -> str:
    """The readable findings summary of a BatchResult (what ``gradlog analyze`` prints)."""
    lines: list[str] = []
    for run in result.runs:
        head = f"{run.run_id}  {_printable(run.name)}  {run.status}  {run.steps} steps"
        lines.append(head + ("  (partial)" if run.partial else ""))
        for p in run.problems:
            lines.append(f"  problem: {_printable(p, 200)}")
        for f in sorted(run.findings, key=lambda f: -f.severity.rank):
            where = f" [{_printable(f.tensor, 60)}]" if f.tensor else ""
            lines.append(
                f"  {f.severity.value:7s} {f.kind.value}{where}: {_printable(f.message, 300)}"
            )
            lines.append(f"          -> {_printable(f.hint, 300)}")
        conv = run.convergence
        if conv is not None and conv.projected_loss is not None:
            lines.append(
                f"  trend: {conv.model} fit, loss {conv.final_loss:.4g} now, "
                f"{conv.projected_loss:.4g} [{conv.projected_low or 0:.4g}, "
                f"{conv.projected_high or 0:.4g}] at step {conv.projected_step}"
            )
        lines.append("")
    for f in result.batch_findings:
        lines.append(f"batch: {_printable(f.message, 300)}")
        lines.append(f"       -> {_printable(f.hint, 300)}")
    if len(result.ranking) > 1:
        lines.append("ranking (projected loss, lower is better):")
        for i, r in enumerate(result.ranking, 1):
            lines.append(f"  {i}. {r.run_id}  {r.outcome:.4g}")
    return "\n".join(lines).rstrip()


@main.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write; a batch also writes one page per run under its folder's runs/ "
    "and plotly.min.js beside it.",
)
@_CONFIG_OPTION
@_SET_OPTION
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@_clean_errors
def report_command(
    *,
    paths: tuple[Path, ...],
    output: Path,
    config_file: Path | None,
    settings: tuple[str, ...],
    no_progress: bool,
) -> None:
    """Write an HTML report of the runs under PATHS (runs or folders of runs).

    Saved analyses (analysis.json) are reused when they were made by this gradlog version with
    the same settings from the same files; other runs are analysed first (and saved).
    """
    from gradlog.report import build_report

    cfg = _analysis_config(config_file, settings)
    out = build_report(list(paths), output, progress=not no_progress, config=cfg)
    click.echo(str(out))


if __name__ == "__main__":  # pragma: no cover
    main()
