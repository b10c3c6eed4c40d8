"""The ``gradlog`` command. User mistakes become one clean line on stderr (exit 2), here only;
click's own usage errors too. Text from run data passes through ``safe_text`` before it is
printed.

Exit codes, the same for every command (docs/CLI.md): 0 clean; 1 a finding at or above
``--fail-on``; 2 usage error (bad option, a path that does not exist or holds no run, a
dependency older than supported); 3 a run
that is broken (unreadable, crashed, or only partly analysed), unless ``--allow-incomplete``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from gradlog import requirements
from gradlog._version import __version__
from gradlog.errors import ConfigError, GradlogError, RunNotFoundError
from gradlog.rundir import Run, discover, is_dir, is_file, open_run
from gradlog.terminal import safe_text

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_BROKEN = 3


def _clean_errors(fn: F) -> F:
    """Turn GradlogError into ``gradlog: error: ...`` and exit code 2 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GradlogError as exc:
            click.echo(f"gradlog: error: {safe_text(str(exc))}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


class _OneLineUsageError(click.UsageError):
    """A click usage error shown as ``gradlog: error: ...; see gradlog CMD -h`` on one line."""

    def __init__(self, exc: click.UsageError) -> None:
        super().__init__(exc.message, exc.ctx)
        message = " ".join(exc.format_message().split()).rstrip(".")
        command = exc.ctx.command_path if exc.ctx is not None else "gradlog"
        self.line = f"gradlog: error: {safe_text(message)}; see {safe_text(command)} -h"

    def show(self, file: Any = None) -> None:
        click.echo(self.line, file=file, err=True)


def _one_line(exc: click.UsageError) -> click.UsageError:
    """``exc`` as a one-line error (a request for help, such as a bare ``gradlog``, stays)."""
    if isinstance(exc, _OneLineUsageError) or type(exc).__name__ == "NoArgsIsHelpError":
        return exc
    return _OneLineUsageError(exc)


class _Gradlog(click.Group):
    """The command group; a usage error of it or of any subcommand (a bad option value, an
    unknown option, a missing argument) is one line on stderr with exit 2 (click's is a usage
    block of three lines)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None


@click.group("gradlog", cls=_Gradlog, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="gradlog")
def main() -> None:
    """Record, analyze and report the gradients of PyTorch training runs.

    Exit codes: 0 clean, 1 findings at or above --fail-on, 2 usage error, 3 a broken run
    (unreadable, crashed or partial).
    """


def _selection(fn: F) -> F:
    """--include/--exclude: globs on a run's directory name, relative path or run id."""
    fn = click.option(
        "--exclude",
        multiple=True,
        metavar="GLOB",
        help="Leave out runs whose directory name, path below PATH or run id matches (repeatable).",
    )(fn)
    return click.option(
        "--include",
        multiple=True,
        metavar="GLOB",
        help="Keep only runs whose directory name, path below PATH or run id matches (repeatable).",
    )(fn)


def _verbosity(fn: F) -> F:
    fn = click.option("-v", "--verbose", count=True, help="More detail (repeatable).")(fn)
    return click.option(
        "-q", "--quiet", count=True, help="Less output: -q only the summary, -qq nothing."
    )(fn)


def _select_runs(
    paths: tuple[Path, ...], include: tuple[str, ...], exclude: tuple[str, ...]
) -> list[Path]:
    """The runs under ``paths`` (at any depth, filtered); a usage error names each path that
    does not exist or holds no (matching) run."""
    runs, missing = discover(paths or (Path("."),), include=include, exclude=exclude)
    if missing:
        whys = [
            why
            + (
                " (globs are expanded by the shell, not by gradlog: use --include)"
                if any(c in str(path) for c in "*?[") and not path.exists()
                else ""
            )
            for path, why in missing
        ]
        raise RunNotFoundError("; ".join(whys))
    return runs


def _format_option(choices: tuple[str, ...]) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        fn = click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Same as --format json.",
        )(fn)
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(choices),
            default="text",
            show_default=True,
            help="Output format (json: docs/CLI.md).",
        )(fn)

    return deco


def _json_text(doc: Any) -> str:
    """A JSON document for stdout: ASCII (control characters, and the lone surrogates that stand
    for undecodable bytes of a file name, as escapes: printable anywhere), NaN refused."""
    return json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=True)


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


def _printable(text: object, limit: int = 40) -> str:
    """A one-line rendering of a string from run data for the terminal: control characters
    escaped (``safe_text``), cut to ``limit`` characters."""
    clean = safe_text(str(text))
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _duration_text(d: float | None) -> str:
    if d is None:
        return "?"
    minutes, seconds = divmod(round(d), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _directory_text(run: Path) -> str:
    """The run's directory as the user would type it: relative to the working directory when
    it lies below it."""
    try:
        return run.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(run)


def _broken_exit(broken: list[str], allow: bool, quiet: int) -> None:
    """Warn about each broken run (unless -qq) and exit 3 unless ``allow``."""
    if quiet < 2:
        for b in broken:
            click.echo(f"gradlog: broken run: {_printable(b, 300)}", err=True)
    if broken and not allow:
        sys.exit(EXIT_BROKEN)


_ALLOW_OPTION = click.option(
    "--allow-incomplete",
    is_flag=True,
    help="Exit 0 rather than 3 when a run is unreadable, crashed or partial.",
)


@main.command("ls")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, readable=False))
@_selection
@_format_option(("text", "json"))
@_ALLOW_OPTION
@_verbosity
@_clean_errors
def ls_command(
    *,
    paths: tuple[Path, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    fmt: str,
    as_json: bool,
    allow_incomplete: bool,
    quiet: int,
    verbose: int,
) -> None:
    """List the runs at any depth under PATHS (default: .): directory, run id, name, status,
    steps, tensors, size."""
    from gradlog.cli_json import ls_json

    infos: list[Run] = [open_run(p) for p in _select_runs(paths, include, exclude)]
    broken = [f"{_directory_text(i.path)}: {b}" for i in infos if (b := i.broken)]
    if as_json or fmt == "json":
        click.echo(_json_text(ls_json(infos)))
    elif quiet == 0:
        rows = [
            [
                _printable(_directory_text(i.path), 60),
                _printable(i.run_id),
                _printable(i.name),
                _printable(i.status),
                str(i.steps),
                str(len(i.catalogue)),
                _human_bytes(i.size_bytes),
            ]
            for i in infos
        ]
        header = ["directory", "run", "name", "status", "steps", "tensors", "size"]
        click.echo(_table(rows, header))
    if quiet < 2 and verbose:
        for i in infos:
            for prob in i.problems:
                where = _printable(_directory_text(i.path), 200)
                click.echo(f"warning: {where}: {_printable(prob, 300)}", err=True)
    _broken_exit(broken, allow_incomplete, quiet)


@main.command("show")
@click.argument("run", type=click.Path(path_type=Path, readable=False))
@_format_option(("text", "json"))
@_ALLOW_OPTION
@_clean_errors
def show_command(run: Path, fmt: str, as_json: bool, allow_incomplete: bool) -> None:
    """Summarise one run: its meta.json and what its parts hold."""
    from gradlog.cli_json import show_json

    if not is_file(run / "meta.json") and is_dir(run):
        found, _ = discover([run])
        if found and found != [run]:
            raise ConfigError(
                f"{run} is not a run but holds {len(found)}; show takes one run, e.g. "
                f"{_directory_text(found[0])} (list them with gradlog ls {run})"
            )
    info = open_run(run)
    if as_json or fmt == "json":
        click.echo(_json_text(show_json(info)))
        _broken_exit([info.broken] if info.broken else [], allow_incomplete, 0)
        return
    if not info.readable:
        _broken_exit([f"{run}: {info.broken}"], allow_incomplete, 0)
        return
    meta = info.meta
    summary = info.summary()
    versions = ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())
    schedules = ", ".join(f"{k}={v}" for k, v in (meta.get("schedules") or {}).items())
    lines = [
        f"run        {_printable(info.run_id, 200)}",
        f"directory  {_printable(_directory_text(info.path), 200)}",
        f"name       {_printable(info.name, 200)}",
        f"status     {_printable(info.status, 80)}",
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
    for prob in info.problems:
        lines.append(f"problem    {_printable(prob, 300)}")
    click.echo("\n".join(lines))
    _broken_exit([f"{run}: {info.broken}"] if info.broken else [], allow_incomplete, 0)


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
    return cfg.with_settings(overrides, source="--set", text=True) if overrides else cfg


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


def _show_progress(no_progress: bool, quiet: int) -> bool:
    """A progress bar only when asked for and stderr is a terminal."""
    return not no_progress and quiet == 0 and sys.stderr.isatty()


def _run_broken(run: Any) -> str | None:
    """Why an analysed run is broken (unreadable, missing, crashed or partial), or None."""
    if run.status == "crashed":
        error = run.meta.get("error")
        return f"crashed: {error}" if isinstance(error, str) else "crashed"
    if run.status in ("unreadable", "missing"):
        why = run.problems[0] if run.problems else run.status
        return f"{run.status}: {why}"
    if run.partial:
        why = run.problems[0] if run.problems else f"status {run.status}"
        return f"partial: {why}"
    return None


def _verdict(
    result: Any, fail_on: str | None, allow_incomplete: bool
) -> tuple[list[str | None], dict[str, int], int, str]:
    """Each run's broken reason, findings per severity, the exit code and its reason."""
    from gradlog.analysis import Severity

    broken = [_run_broken(r) for r in result.runs]
    counts = {s.value: 0 for s in sorted(Severity, key=lambda s: -s.rank)}
    for f in result.findings:
        counts[f.severity.value] += 1
    n_broken = sum(b is not None for b in broken)
    if n_broken and not allow_incomplete:
        return broken, counts, EXIT_BROKEN, f"{n_broken} broken run{'s' * (n_broken != 1)}"
    if fail_on is not None:
        limit = Severity(fail_on)
        hits = sum(1 for f in result.findings if f.severity >= limit)
        if hits:
            return broken, counts, EXIT_FINDINGS, f"{hits} at or above --fail-on {fail_on}"
        return broken, counts, EXIT_OK, f"none at or above --fail-on {fail_on}"
    return broken, counts, EXIT_OK, "no --fail-on given"


def _summary_line(
    result: Any, broken: list[str | None], counts: dict[str, int], code: int, why: str
) -> str:
    n = len(result.runs)
    plural = {"error": "errors", "warning": "warnings"}
    found = ", ".join(f"{v} {plural.get(k, k) if v != 1 else k}" for k, v in counts.items())
    n_broken = sum(b is not None for b in broken)
    return f"gradlog: {n} run{'s' * (n != 1)} ({n_broken} broken); {found}; exit {code}: {why}"


def _github_escape(text: str, *, prop: bool = False) -> str:
    """``text`` for a workflow command: control characters escaped (``safe_text``), then ``%``,
    CR and LF (and in a property ``:`` and ``,``) as GitHub's rules ask."""
    out = safe_text(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return out.replace(":", "%3A").replace(",", "%2C") if prop else out


def github_annotations(result: Any, broken: list[str | None]) -> str:
    """GitHub Actions workflow commands: one ``::error``/``::warning``/``::notice`` per finding
    and broken run, with the run's meta.json as the file."""
    from gradlog.cli_json import sorted_findings

    level = {"error": "error", "warning": "warning", "info": "notice"}
    lines: list[str] = []
    for run, why in zip(result.runs, broken, strict=True):
        file = _github_escape(_directory_text(Path(run.path) / "meta.json"), prop=True)
        if why is not None:
            title = _github_escape(f"gradlog: broken run {run.run_id}", prop=True)
            lines.append(f"::error file={file},title={title}::{_github_escape(why)}")
        for f in sorted_findings(run.findings):
            where = f" [{f.tensor}]" if f.tensor else ""
            steps = "" if f.step_start is None else f" (steps {f.step_start}-{f.step_end})"
            title = _github_escape(f"gradlog {f.kind.value}{where} in {run.run_id}", prop=True)
            text = _github_escape(f"{f.message}{steps} Hint: {f.hint}")
            lines.append(f"::{level[f.severity.value]} file={file},title={title}::{text}")
    for f in sorted_findings(result.batch_findings):
        title = _github_escape(f"gradlog batch {f.kind.value}", prop=True)
        text = _github_escape(f"{f.message} Hint: {f.hint}")
        lines.append(f"::{level[f.severity.value]} title={title}::{text}")
    return "\n".join(lines)


def _executor_options(fn: F) -> F:
    """--jobs N / --ray [ADDRESS] (where the runs are analysed) and --out DIR (where results go)."""
    fn = click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Save each run's analysis.json under DIR (for read-only data) instead of in the run.",
    )(fn)
    fn = click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="auto",
        default=None,
        metavar="[ADDRESS]",
        help="Analyse the runs as tasks on a Ray cluster (auto, HOST:PORT of the head or "
        "ray://HOST:PORT); every node must read the runs at the same paths. "
        "Needs torch-gradlog[ray].",
    )(fn)
    return click.option(
        "--jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Analyse N runs at once in worker processes on this machine.",
    )(fn)


@main.command("analyze")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, readable=False))
@_selection
@_format_option(("text", "json", "github"))
@click.option(
    "--fail-on",
    type=click.Choice(_SEVERITIES),
    default=None,
    help="Exit 1 when a finding reaches this severity.",
)
@_ALLOW_OPTION
@_CONFIG_OPTION
@_SET_OPTION
@click.option("--no-save", is_flag=True, help="Do not write <run>/analysis.json.")
@click.option("--no-progress", is_flag=True, help="No progress bar (none when stderr is no tty).")
@_executor_options
@_verbosity
@_clean_errors
def analyze_command(
    *,
    paths: tuple[Path, ...],
    jobs: int | None,
    ray_address: str | None,
    out_dir: Path | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    fmt: str,
    as_json: bool,
    fail_on: str | None,
    allow_incomplete: bool,
    config_file: Path | None,
    settings: tuple[str, ...],
    no_save: bool,
    no_progress: bool,
    quiet: int,
    verbose: int,
) -> None:
    """Run the detectors, trends and hints over the runs at any depth under PATHS."""
    fmt = "json" if as_json else fmt
    cfg = _analysis_config(config_file, settings)
    runs = _select_runs(paths, include, exclude)
    requirements.check()
    from gradlog.analysis import analyze
    from gradlog.cli_json import analysis_json

    progress = _show_progress(no_progress, quiet)
    from gradlog.analysis.executors import make_executor

    executor = make_executor(jobs, ray_address)
    try:
        result = analyze(
            runs, cfg, progress=progress, save=not no_save, executor=executor, out=out_dir
        )
    finally:
        if executor is not None:
            executor.close()
    broken, counts, code, why = _verdict(result, fail_on, allow_incomplete)
    if fmt == "json":
        doc = analysis_json(result, broken, counts, code, why)
        click.echo(_json_text(doc))
    elif fmt == "github":
        text = github_annotations(result, broken)
        if text:
            click.echo(text)
    elif quiet == 0:
        click.echo(analysis_text(result, verbose=verbose))
    if quiet < 2:
        for run, b in zip(result.runs, broken, strict=True):
            if b is not None:
                who = _printable(run.run_id, 200)
                click.echo(f"gradlog: broken run {who}: {_printable(b, 300)}", err=True)
        click.echo(_summary_line(result, broken, counts, code, why), err=fmt != "text")
    sys.exit(code)


def analysis_text(result: Any, verbose: int = 0) -> str:
    """The readable findings summary of a BatchResult (what ``gradlog analyze`` prints)."""
    from gradlog.cli_json import sorted_findings

    lines: list[str] = []
    for run in result.runs:
        head = (
            f"{_printable(run.run_id, 200)}  {_printable(run.name)}  {_printable(run.status, 80)}"
            f"  {run.steps} steps"
        )
        lines.append(head + ("  (partial)" if run.partial else ""))
        if verbose:
            lines.append(f"  path: {_printable(run.path, 200)}")
        for p in run.problems:
            lines.append(f"  problem: {_printable(p, 200)}")
        for f in sorted_findings(run.findings):
            where = f" [{_printable(f.tensor, 60)}]" if f.tensor else ""
            lines.append(
                f"  {f.severity.value:7s} {f.kind.value}{where}: {_printable(f.message, 300)}"
            )
            lines.append(f"          -> {_printable(f.hint, 300)}")
            if verbose:
                ev = ", ".join(f"{k}={v}" for k, v in f.evidence.items())
                lines.append(f"          evidence: {_printable(ev, 300)}")
        conv = run.convergence
        if conv is not None and conv.projected_loss is not None:
            lines.append(
                f"  trend: {conv.model} fit, loss {conv.final_loss:.4g} now, "
                f"{conv.projected_loss:.4g} [{conv.projected_low or 0:.4g}, "
                f"{conv.projected_high or 0:.4g}] at step {conv.projected_step}"
            )
        lines.append("")
    for f in sorted_findings(result.batch_findings):
        lines.append(f"batch: {_printable(f.message, 300)}")
        lines.append(f"       -> {_printable(f.hint, 300)}")
    if len(result.ranking) > 1:
        lines.append("ranking (projected loss, lower is better):")
        for i, r in enumerate(result.ranking, 1):
            lines.append(f"  {i}. {_printable(r.run_id, 200)}  {r.outcome:.4g}")
    return "\n".join(lines).rstrip()


@main.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, readable=False))
@_selection
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
@click.option(
    "--fail-on",
    type=click.Choice(_SEVERITIES),
    default=None,
    help="Exit 1 when a finding reaches this severity (the report is written first).",
)
@_ALLOW_OPTION
@_CONFIG_OPTION
@_SET_OPTION
@click.option("--no-progress", is_flag=True, help="No progress bar (none when stderr is no tty).")
@_executor_options
@_verbosity
@_clean_errors
def report_command(
    *,
    paths: tuple[Path, ...],
    jobs: int | None,
    ray_address: str | None,
    out_dir: Path | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    output: Path,
    fail_on: str | None,
    allow_incomplete: bool,
    config_file: Path | None,
    settings: tuple[str, ...],
    no_progress: bool,
    quiet: int,
    verbose: int,
) -> None:
    """Write an HTML report of the runs at any depth under PATHS.

    Saved analyses (analysis.json) are reused when they were made by this gradlog version with
    the same settings from the same files; other runs are analysed first (and saved).
    """
    if output.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"the report is an HTML file: give a name ending in .html, not {output}")
    cfg = _analysis_config(config_file, settings)
    runs = _select_runs(paths, include, exclude)
    progress = _show_progress(no_progress, quiet)
    requirements.check()
    from gradlog.analysis.current import current_results
    from gradlog.analysis.executors import make_executor
    from gradlog.report.build import write_report

    executor = make_executor(jobs, ray_address)
    try:
        result, analysed = current_results(
            runs, cfg, progress=progress, executor=executor, out=out_dir
        )
    finally:
        if executor is not None:
            executor.close()
    out = write_report(result, output, progress=progress)
    broken, counts, code, why = _verdict(result, fail_on, allow_incomplete)
    if quiet == 0:
        if verbose:
            click.echo(f"analysed {len(analysed)} of {len(runs)} runs; reused the others")
        click.echo(safe_text(str(out)))
    if quiet < 2:
        for run, b in zip(result.runs, broken, strict=True):
            if b is not None:
                who = _printable(run.run_id, 200)
                click.echo(f"gradlog: broken run {who}: {_printable(b, 300)}", err=True)
        click.echo(_summary_line(result, broken, counts, code, why), err=True)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="gradlog")
