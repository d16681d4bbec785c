"""Command line: parse, call the stages, render, exit. The only module that prints or exits."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Set
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from reprocheck import __version__, reuse
from reprocheck.cache import CACHE_DIR, DEFAULT_PRUNE_DAYS, RunCache
from reprocheck.cache import prune as prune_cache
from reprocheck.config import EXPLAIN_MAX_EXPERIMENTS, RunConfig, load_config, registry_prefix
from reprocheck.engine import BUILD_ENGINE, ContainerEngine, ImageInfo, get_engine
from reprocheck.engine.targets import connect_target, target_of
from reprocheck.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    ReprocheckError,
)
from reprocheck.images import (
    LABEL_COMPOSE,
    LABEL_CONTEXT,
    LABEL_DOCKERFILE,
    LABEL_HYBRID,
    ImageBuilder,
    base_images,
    bootstrap_debian,
    project_contexts,
)
from reprocheck.plan import make_plan
from reprocheck.refresh import recorder
from reprocheck.registry import lock_path, push_images, pushed_references
from reprocheck.render import (
    ProgressPrinter,
    escape,
    print_explanation,
    print_images,
    print_summary,
)
from reprocheck.report.paths import NO_EXTRA_REPORTS, ReportPaths
from reprocheck.run_model import RunResult, new_run_id
from reprocheck.runner import Runner, raise_interrupt
from reprocheck.store import (
    HTML_FILE,
    MARKDOWN_FILE,
    REPORT_FILE,
    check_run_folder,
    find_run,
    load_run,
    run_folders,
    save_run,
    write_bytes_atomic,
)
from reprocheck.stored import (
    baselines_dir,
    list_baselines,
    load_baseline,
    merge_runs,
    reference_pairs,
    renamed,
    require_runs,
    save_baseline,
)

if TYPE_CHECKING:
    from reprocheck.matrix import Matrix

# Comparing, the history and report.json are imported by the commands that use them: they
# bring pandas (0.4 s), which a run that repeats an earlier one (reprocheck.reuse) never needs.

# Piped output (CI logs) gets wide lines instead of rich's 80-column default.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
F = TypeVar("F", bound=Callable[..., Any])
ERROR_LOG = "error.log"


class _WarningLine(logging.Handler):
    """The library's warnings (a damaged history moved aside, ...) as one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[yellow]warning:[/] {escape(record.getMessage())}", soft_wrap=True)


def _log_warnings() -> None:
    logger = logging.getLogger("reprocheck")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(level=logging.WARNING))
        logger.setLevel(logging.WARNING)


def _write_traceback(folder: Path | None) -> Path:
    """The current exception's traceback in ``folder/error.log`` (else a temporary file)."""
    text = f"reprocheck {__version__}, {' '.join(sys.argv)}\n{traceback.format_exc()}"
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / ERROR_LOG
            path.write_text(text)
            return path
        except OSError:
            pass
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"reprocheck-{stamp}-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return Path(name)


def _internal_error(exc: BaseException, folder: Path | None, stored: str = "") -> None:
    log = _write_traceback(folder)
    what = f"internal error: {type(exc).__name__}: {exc}{stored}; traceback in {log}"
    err.print(f"[bold red]error:[/] {escape(what)}", soft_wrap=True)
    sys.exit(EXIT_ERROR)


def handled(func: F) -> F:
    """Turn a ReprocheckError into one line on stderr and its exit code; an unexpected
    exception into one line naming a log file with its traceback (exit 2). Never a
    traceback on the terminal."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _log_warnings()
        signal.signal(signal.SIGTERM, raise_interrupt)  # stop like Ctrl-C: containers removed
        try:
            return func(*args, **kwargs)
        except ReprocheckError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            _internal_error(exc, None)

    return wrapper  # type: ignore[return-value]


@contextmanager
def _stored_run_guard(run_dir: Path) -> Iterator[None]:
    """After the containers ran, the run is stored first; an unexpected failure later (in
    compare or a report) names the stored run and a log file, and exits 2."""
    try:
        yield
    except (ReprocheckError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _internal_error(exc, run_dir, f" (the run is stored in {run_dir}: 'reprocheck "
                        f"compare --run {run_dir}' compares it again)")  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reprocheck")
def main() -> None:
    """Run one numeric pipeline across OS container images and say what drifted."""


config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="reprocheck.toml or pyproject.toml (default: found from the current folder)",
)  # fmt: skip


def report_options(func: F) -> F:
    """--md, --junit and --html: report files written next to the JSON one."""
    for flag, text in (("html", "HTML report"), ("junit", "JUnit XML"), ("md", "Markdown summary")):
        option = click.option(f"--{flag}", f"{flag}_path", type=click.Path(path_type=Path),
                              help=f"Write the {text} here too.")  # fmt: skip
        func = option(func)
    return func


def report_paths(kwargs: dict[str, Path | None]) -> ReportPaths:
    return ReportPaths(md=kwargs["md_path"], junit=kwargs["junit_path"], html=kwargs["html_path"])


@main.command()
@config_option
@click.option("--env", "envs", multiple=True, help="Run only this environment (repeatable).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the JSON report.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Run folder to write (default: reports/<run-id>).")  # fmt: skip
@click.option("--baseline", "baseline", default=None,
              help="Also compare each environment with this saved baseline.")  # fmt: skip
@click.option("-j", "--jobs", type=int, default=None,
              help="Environments to run at the same time (default: [run] jobs, else one per "
                   "core).")  # fmt: skip
@click.option("--no-cache", is_flag=True,
              help="Run every environment even when a cached result matches (the new results "
                   "replace the cached ones).")  # fmt: skip
@click.option("--rebuild", is_flag=True,
              help="Build the environments' images again without the layer cache, so apt and "
                   "pip resolve again.")  # fmt: skip
@click.option("--refresh", is_flag=True,
              help="--rebuild, then record per environment which package versions changed "
                   "against its last stored run (in run.json and every report).")  # fmt: skip
@click.option("--cpus", default=None, metavar="MODEL,...",
              help="Also run each environment as these CPU models under qemu-user, e.g. "
                   "native,x86-64-v3,x86-64-v2 (default: [compare] cpus).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Print only the verdict line.")
@click.option("-v", "--verbose", is_flag=True, help="Show build and bootstrap output.")
@report_options
@handled
def run(
    config_path: Path | None,
    envs: tuple[str, ...],
    json_path: Path | None,
    out_dir: Path | None,
    baseline: str | None,
    jobs: int | None,
    no_cache: bool,
    rebuild: bool,
    refresh: bool,
    cpus: str | None,
    quiet: bool,
    verbose: bool,
    **reports: Path | None,
) -> None:
    """Build what is missing, run every environment (or reuse its cached result), compare,
    report."""
    config = load_config(config_path)
    models = None if cpus is None else tuple(c.strip() for c in cpus.split(",") if c.strip())
    plan = make_plan(config, envs, models)
    golden = load_baseline(config, baseline) if baseline else None
    if out_dir is not None:
        check_run_folder(out_dir, config.root)
        run_folders(config.reports_dir / CACHE_DIR, config.root, add=out_dir.resolve())
    engine = get_engine(BUILD_ENGINE)
    run_dir = (out_dir or config.reports_dir / new_run_id()).resolve()
    run_id = run_dir.name  # a merge of --out folders gets an id of its own
    cache = RunCache.open(config, read=not no_cache, reports=[json_path, *reports.values()])
    refreshed = recorder(plan, refresh)
    with ProgressPrinter(err, quiet=quiet, verbose=verbose) as progress:
        runner = Runner(engine, plan, progress, run_id=run_id, cache=cache,
                        rebuild=rebuild or refresh, preload=_import_comparing)  # fmt: skip
        result = refreshed(runner.run(run_dir, jobs or config.run.jobs or os.cpu_count() or 1))
    # A run of its own (not --out, --baseline, --rebuild, --refresh) may repeat an earlier one.
    own = out_dir is None and golden is None and not (rebuild or refresh)
    key = reuse.run_key(config, cache, result, models) if own else None
    if key is not None and reuse.all_restored(cache):
        _repeat_if_unchanged(config, key, result, json_path, quiet, report_paths(reports))
    save_run(result, latest=run_dir.parent == config.reports_dir.resolve())
    if result.interrupted:
        _exit_interrupted(result)
    from reprocheck.stages import matrix_for

    with _stored_run_guard(result.run_dir):
        matrix = matrix_for(config, result, golden, baseline)
        code = _finish(config, result, matrix, json_path, quiet, report_paths(reports))
    if key is not None:
        reuse.record(config, key, result.run_dir, code)
    sys.exit(code)


def _import_comparing() -> None:
    """What a run imports once its containers ran: comparing and the reports (numpy, pyarrow
    and pandas are imported by then)."""
    import reprocheck.stages  # noqa: F401


def _repeat_if_unchanged(
    config: RunConfig, key: str, result: RunResult, json_path: Path | None, quiet: bool,
    paths: ReportPaths,
) -> None:  # fmt: skip
    """Exit with the earlier run's code when this run is that run again (reprocheck.reuse);
    return when it is a run of its own."""
    repeated = reuse.find(config, key)
    views = _repeated_views(repeated, quiet, paths) if repeated else None
    if repeated is None or views is None:
        return
    reuse.adopt(repeated, result.run_dir)
    sys.exit(_repeat(repeated, views, json_path, paths))


@dataclass(frozen=True)
class _Views:
    summary: str  # the summary as printed
    junit: bytes | None  # when --junit asks for it


def _repeated_views(repeated: reuse.Reused, quiet: bool, paths: ReportPaths) -> _Views | None:
    """The summary and JUnit of the run a run repeats, rendered before anything is changed;
    None (with a warning) when its report.json cannot be rendered: the run then compares."""
    try:
        junit = None
        if paths.junit is not None:
            from reprocheck.report.junit import render_junit

            junit = render_junit(repeated.report).encode()
        with out.capture() as captured:
            print_summary(out, repeated.report, quiet=quiet)
            out.print(f"report: {repeated.run_dir / REPORT_FILE}")
            out.print(f"html: {paths.html or repeated.run_dir / HTML_FILE}")
    except Exception as exc:  # a report.json written by hand, or by something else
        err.print(f"[yellow]warning:[/] the reports of run {escape(repeated.run_dir.name)} "
                  f"cannot be shown again ({type(exc).__name__}: {escape(str(exc))}): "
                  "comparing again", soft_wrap=True)  # fmt: skip
        return None
    return _Views(summary=captured.get(), junit=junit)


def _repeat(
    repeated: reuse.Reused, views: _Views, json_path: Path | None, paths: ReportPaths
) -> int:  # fmt: skip
    """Nothing changed since an earlier run: its reports stand (copied where asked)."""
    folder = repeated.run_dir
    err.print(f"nothing changed since run {escape(folder.name)} (every environment cached, "
              f"the same config and reprocheck): its reports stand; --no-cache runs again",
              soft_wrap=True)  # fmt: skip
    copies = [(json_path, REPORT_FILE), (paths.md, MARKDOWN_FILE), (paths.html, HTML_FILE)]
    asked = [(target, repeated.files[name]) for target, name in copies if target is not None]
    if paths.junit is not None and views.junit is not None:
        asked.append((paths.junit, views.junit))
    for target, data in asked:
        _write_asked(target, data, folder)
    sys.stdout.write(views.summary)
    sys.stdout.flush()
    return repeated.exit_code


def _write_asked(target: Path, data: bytes, repeated: Path) -> None:
    """A report file named on the command line (never one of the repeated run's own)."""
    if target.resolve().is_relative_to(repeated):
        raise ConfigError(f"{target} is a file of run {repeated.name}, whose reports stand",
                          fix="name a file outside that run's folder")  # fmt: skip
    try:
        write_bytes_atomic(target, data)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}",
                          fix="name a file in a folder you can write") from exc  # fmt: skip


def _exit_interrupted(result: RunResult) -> None:
    """Stored what finished; leave now (threads still building an image are abandoned)."""
    kept = [env.name for env in result.environments if env.status != "interrupted"]
    err.print(f"[red]interrupted[/]: stored {len(kept)} finished environment(s) "
              f"({', '.join(kept) or 'none'}) in {result.run_dir}; no container of this run is "
              f"left running", soft_wrap=True)  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _finish(
    config: RunConfig, result: RunResult, matrix: Matrix, json_path: Path | None, quiet: bool,
    paths: ReportPaths = NO_EXTRA_REPORTS,
) -> int:  # fmt: skip
    from reprocheck.stages import exit_code, write_run_files

    files = write_run_files(config, result, matrix, _stage_warning(result.run_dir), paths,
                            json_path)  # fmt: skip
    print_summary(out, files.data, quiet=quiet)
    out.print(f"report: {result.run_dir / REPORT_FILE}")
    if files.html:
        out.print(f"html: {paths.html or files.html}")
    return exit_code(result, matrix) if files.complete else EXIT_ERROR


def _stage_warning(run_dir: Path) -> Callable[[str, Exception], None]:
    """A late stage that failed: one warning line (naming the traceback's log)."""

    def warn(name: str, exc: Exception) -> None:
        if isinstance(exc, ReprocheckError):
            err.print(f"[yellow]warning:[/] {name}: {escape(str(exc))}", soft_wrap=True)
            return
        log = _write_traceback(run_dir)
        what = f"{name} failed: {type(exc).__name__}: {exc}; traceback in {log}"
        err.print(f"[yellow]warning:[/] {escape(what)}", soft_wrap=True)

    return warn


@main.command()
@config_option
@click.option("--run", "run_ref", default=None, help="Run id or folder (default: latest).")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@report_options
@handled
def compare(
    config_path: Path | None, run_ref: str | None, json_path: Path | None, **reports: Path | None
) -> None:
    """Compare a stored run again (for example after changing tolerances). With another
    config than the run's, the reports go to a derived run under the run's ``derived/``
    folder; the stored run's own reports and history rows stay as they were."""
    from reprocheck.matrix import build_matrix
    from reprocheck.stages import derived_run

    config = load_config(config_path)
    result = derived_run(config, load_run(find_run(config.reports_dir, run_ref)))
    with _stored_run_guard(result.run_dir):
        matrix = build_matrix(config, result)
        code = _finish(config, result, matrix, json_path, False, report_paths(reports))
    sys.exit(code)


@main.command()
@config_option
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@handled
def diff(config_path: Path | None, run_a: str, run_b: str, json_path: Path | None) -> None:
    """Compare two stored runs: each environment of RUN_A with the same one in RUN_B
    (or, when each run has a single environment, those two)."""
    from reprocheck.matrix import build_matrix
    from reprocheck.report.json_report import report_dict, write_json
    from reprocheck.stages import exit_code

    config = load_config(config_path)
    first = load_run(find_run(config.reports_dir, run_a))
    second = load_run(find_run(config.reports_dir, run_b))
    label = first.run_dir.name  # as the user named it (a run's id, or its --out folder)
    references = renamed(first, label)
    pairs = reference_pairs(references, second, label)
    if not pairs and len(first.environments) == len(second.environments) == 1:
        pairs = ((references[0].name, second.environments[0].name),)
    if not pairs:
        raise ConfigError(f"runs {first.run_id} and {second.run_id} share no environment",
                          fix="diff runs of the same environments")  # fmt: skip
    matrix = build_matrix(config, second, references=references, pairs=pairs)
    data = report_dict(second, matrix, references=matrix.references)
    if json_path:
        write_json(json_path, data)
    print_summary(out, data, quiet=False)
    sys.exit(exit_code(second, matrix))


@main.command()
@config_option
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Merged run folder.")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@report_options
@handled
def merge(
    config_path: Path | None, run_dirs: tuple[Path, ...], out_dir: Path | None,
    json_path: Path | None, **reports: Path | None,
) -> None:  # fmt: skip
    """Join runs of different environments (split across CI jobs or machines) into one."""
    from reprocheck.matrix import build_matrix

    config = load_config(config_path)
    result = merge_runs(config, require_runs(list(run_dirs)), out_dir)
    matrix = build_matrix(config, result)
    sys.exit(_finish(config, result, matrix, json_path, False, report_paths(reports)))


@main.command()
@config_option
@click.option("--run", "run_ref", default=None, help="Run id or folder (default: latest).")
@click.option("--output", "glob", default="*", help="Explain only outputs matching this glob.")
@click.option("--max-experiments", default=EXPLAIN_MAX_EXPERIMENTS, show_default=True,
              help="Budget per pair.")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@report_options
@handled
def explain(
    config_path: Path | None, run_ref: str | None, glob: str, max_experiments: int,
    json_path: Path | None, **reports: Path | None,
) -> None:  # fmt: skip
    """Attribute each drifting output to a stage and a cause, by experiment. With another
    config than the run's, explain.json and the attributions go to the derived run (as
    ``compare`` writes it)."""
    from reprocheck.matrix import build_matrix
    from reprocheck.report.json_report import write_json
    from reprocheck.stages import derived_run, write_run_files

    config = load_config(config_path)
    stored = load_run(find_run(config.reports_dir, run_ref))
    result = derived_run(config, stored)  # another config: never rewrite the stored run
    if result is not stored and not (result.run_dir / REPORT_FILE).is_file():
        with _stored_run_guard(result.run_dir):
            write_run_files(config, result, build_matrix(config, result),
                            _stage_warning(result.run_dir))  # fmt: skip
    from reprocheck.explain import Explainer, attributions_json, experiments_json  # heavy

    engine = get_engine(BUILD_ENGINE)
    started = time.monotonic()
    with ProgressPrinter(err, quiet=False, verbose=False) as progress:
        explainer = Explainer(engine, config, result, max_experiments=max_experiments,
                              progress=progress)  # fmt: skip
        explanation = explainer.explain(glob)
    seconds = time.monotonic() - started
    data = {"schema_version": 1, "run_id": result.run_id, "seconds": round(seconds, 2),
            "attributions": attributions_json(explanation),
            "experiments": experiments_json(explanation)}  # fmt: skip
    write_json(result.run_dir / "explain.json", data)
    html = _attach_attributions(config, result, data, report_paths(reports))
    if json_path:
        write_json(json_path, data)
    print_explanation(out, explanation, seconds)
    if html:
        out.print(f"html: {reports.get('html_path') or html}")


def _merged(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(item: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in item.items() if k not in ("causes", "ruled_out",
                           "advice", "family", "status", "cached", "seconds")},
                          sort_keys=True)  # fmt: skip

    merged = {key(item): item for item in old}
    merged.update((key(item), item) for item in new)
    return list(merged.values())


def _attach_attributions(
    config: RunConfig, result: RunResult, data: dict[str, Any], paths: ReportPaths
) -> Path | None:
    """Merge the attributions into the run's report.json (an output explained again replaces
    its earlier attribution; explains of other outputs are kept) and re-render the reports
    with them, keeping the trend plot the run's HTML had."""
    from reprocheck.report.json_report import write_json
    from reprocheck.report.picture_cache import pictures_folder
    from reprocheck.report.writers import write_reports
    from reprocheck.stages import trend_of

    report_path = result.run_dir / REPORT_FILE
    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text())
    report["attributions"] = _merged(report.get("attributions", []), data["attributions"])
    report["experiments"] = _merged(report.get("experiments", []), data["experiments"])
    write_json(report_path, report)
    return write_reports(report, result.run_dir, paths, trend=trend_of(config),
                         pictures=pictures_folder(config.reports_dir))  # fmt: skip


@main.group()
def baseline() -> None:
    """Named golden sets of outputs and fingerprints."""


@baseline.command("save")
@click.argument("name")
@config_option
@click.option("--run", "run_ref", default=None, help="Run id or folder (default: latest).")
@click.option("--force", is_flag=True, help="Replace an existing baseline of that name.")
@handled
def baseline_save(name: str, config_path: Path | None, run_ref: str | None, force: bool) -> None:
    """Store a run (the latest by default) as baseline NAME."""
    config = load_config(config_path)
    source = find_run(config.reports_dir, run_ref)
    saved = save_baseline(config, source, name, replace=force)
    out.print(f"baseline {name}: {saved} (from {source.name})")


@baseline.command("list")
@config_option
@handled
def baseline_list(config_path: Path | None) -> None:
    """The stored baselines: name, run, when it started, environments."""
    config = load_config(config_path)
    entries = list_baselines(config)
    if not entries:
        out.print(f"no baselines in {baselines_dir(config)}")
    for entry in entries:
        envs = escape(", ".join(entry.environments))
        out.print(f"{escape(entry.name)}  run {escape(entry.run_id)}  started {entry.started}  "
                  f"environments {envs}", highlight=False)  # fmt: skip


@main.command()
@config_option
@click.option("--png", "png_path", type=click.Path(path_type=Path), help="Trend plot path.")
@handled
def history(config_path: Path | None, png_path: Path | None) -> None:
    """One line per stored run: date, environments, drift counts, worst output."""
    from reprocheck.history import config_name, history_file, history_lines, trend_png

    config = load_config(config_path)
    path = history_file(config)
    lines = history_lines(path, config_name(config))  # this config's runs only
    for line in lines:
        worst = (f"{line.worst_output} (max_abs {line.worst_abs:.3g})"
                 if line.worst_output and line.worst_abs is not None else "-")  # fmt: skip
        text = (f"{line.started}  {line.run_id}  {','.join(line.environments)}  "
                f"drift {line.drift}/{line.compared}  worst {worst}")  # fmt: skip
        out.print(escape(text), soft_wrap=True)  # an output named out[/x] is not markup
    png = trend_png(lines)
    if png is not None:
        target = png_path or path.with_suffix(".png")
        write_bytes_atomic(target, png)
        out.print(f"trend plot: {escape(str(target))}")


@main.group("cache")
def cache_group() -> None:
    """The result cache: environment runs reused while nothing they depend on changes."""


def _a_number(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if math.isnan(value):
        raise click.BadParameter("nan is not a number of days")
    return value


@cache_group.command("prune")
@config_option
@click.option("--all", "everything", is_flag=True, help="Remove every entry.")
@click.option("--older-than", "days", type=click.FloatRange(min=0), callback=_a_number,
              default=DEFAULT_PRUNE_DAYS,
              show_default=True, help="Remove entries not used for this many days.")  # fmt: skip
@handled
def cache_prune(config_path: Path | None, everything: bool, days: float) -> None:
    """Remove unused, damaged and orphaned entries (their image is gone) and say what that
    freed."""
    config = load_config(config_path)
    folder = config.reports_dir / CACHE_DIR
    done = prune_cache(folder, everything=everything, older_than_days=days,
                       image_exists=_image_check(config))  # fmt: skip
    causes = ((done.damaged, "damaged"), (done.image_gone, "of images no longer present"))
    why = ", ".join(f"{count} {what}" for count, what in causes if count)
    out.print(f"removed {done.removed} cache entries{f' ({why})' if why else ''}, freed "
              f"{done.freed_bytes / 1e6:.1f} MB; {done.kept} kept in {folder}")  # fmt: skip
    if records := reuse.prune(folder, everything=everything):
        out.print(f"removed {records} records of runs that no longer stand for their inputs")
    from reprocheck.report import picture_cache

    pictures = picture_cache.pictures_folder(config.reports_dir)
    if drawn := picture_cache.prune(pictures, older_than_days=days, everything=everything):
        why = "" if everything else f" not used for {days:g} days"
        out.print(f"removed {drawn} kept pictures{why} from {pictures}")
    if done.failed:
        raise ConfigError(f"cannot remove {len(done.failed)} item(s) of the cache {folder} "
                          f"({done.failed[0]})", fix="make the folder writable")  # fmt: skip


def _image_check(config: RunConfig) -> Callable[[str], bool] | None:
    """Whether an image ID still exists, or None when the engine cannot be asked."""
    try:
        engine = get_engine(BUILD_ENGINE)
    except ReprocheckError:
        return None

    def exists(image_id: str) -> bool:
        try:
            return engine.image(image_id) is not None
        except Exception:  # unsure: keep the entry
            return True

    return exists


@main.group()
def images() -> None:
    """Build, bootstrap and list environment images."""


@images.command("bootstrap")
@click.argument("refs", nargs=-1, required=True)
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True)
@click.option("--platform", default=None, help="e.g. linux/arm64 (needs qemu-user-static).")
@click.option("--force", is_flag=True, help="Rebuild even when the image exists.")
@click.option("--jobs", default=1, show_default=True, help="Bootstrap this many in parallel.")
@handled
def images_bootstrap(
    refs: tuple[str, ...], mirror: str, platform: str | None, force: bool, jobs: int
) -> None:
    """Build debian:SUITE base images from the Debian archive (no registry needed)."""
    engine = get_engine(BUILD_ENGINE)
    missing = [ref for ref in refs if force or engine.image(ref) is None]
    for ref in sorted(set(refs) - set(missing)):
        err.print(f"{ref} is already present; --force rebuilds it")
    with ProgressPrinter(err, quiet=False, verbose=False) as progress:

        def one(ref: str) -> str:
            info = bootstrap_debian(engine, ref, mirror=mirror, platform=platform,
                                    progress=progress)  # fmt: skip
            return f"{ref} {info.id}"

        for line in parallel(one, missing, jobs):
            out.print(line)


def parallel(func: Callable[[str], str], items: list[str], jobs: int) -> list[str]:
    """Run ``func`` over ``items`` on ``jobs`` threads; the first error is raised after all end."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(func, item) for item in items]
    return [future.result() for future in futures]


@images.command("build")
@config_option
@click.option("--env", "envs", multiple=True)
@click.option("--jobs", default=1, show_default=True, help="Build this many in parallel.")
@handled
def images_build(config_path: Path | None, envs: tuple[str, ...], jobs: int) -> None:
    """Build (or find in the cache) every environment's image."""
    config = load_config(config_path)
    engine = get_engine(BUILD_ENGINE)
    with ProgressPrinter(err, quiet=False, verbose=False) as progress:
        builder = ImageBuilder(engine, config, progress)

        def one(name: str) -> str:
            image = builder.resolve(config.environment(name))
            return f"{image.environment:14} {image.ref:40} {image.image_id}"

        names = [env.name for env in make_plan(config, envs).environments]
        for line in parallel(one, names, jobs):
            out.print(line)


@images.command("push")
@config_option
@click.option("--registry", default=None, metavar="HOST[:PORT]/PREFIX",
              help="Push here (default: [images] registry).")  # fmt: skip
@click.option("--env", "envs", multiple=True, help="Push only this environment (repeatable).")
@handled
def images_push(config_path: Path | None, registry: str | None, envs: tuple[str, ...]) -> None:
    """Build what is missing, push each environment's image to the registry and write their
    digests to the lock file; remote engines then pull them by digest."""
    config = load_config(config_path)
    target = _registry(config, registry)
    engine = get_engine(BUILD_ENGINE)
    for name in envs:
        config.environment(name)  # a ConfigError naming the known environments
    chosen = [env for env in config.environments if not envs or env.name in envs]
    with ProgressPrinter(err, quiet=False, verbose=False) as progress:
        pushed = push_images(config, engine, target, chosen, progress)
    for env in chosen:
        entry = pushed.get(env.name)
        line = entry.reference if entry else f"{env.image} (pinned by digest in the config)"
        out.print(f"{env.name:14} {line}", soft_wrap=True, highlight=False)
    out.print(f"lock: {lock_path(config)}")


def _registry(config: RunConfig, option: str | None) -> str:
    """--registry, else [images] registry; a one-line error when neither names one."""
    if option is not None:
        try:
            return registry_prefix(option)
        except ValueError as exc:
            raise ConfigError(f"--registry: {exc}", fix="see 'reprocheck images push -h'") from None
    if config.images.registry is None:
        raise ConfigError(f"no registry to push to: {config.source} sets no [images] registry",
                          fix="pass --registry HOST[:PORT]/PREFIX or set [images] "
                              "registry")  # fmt: skip
    return config.images.registry


@images.command("list")
@config_option
@click.option("--all", "everything", is_flag=True,
              help="Every image reprocheck made (any project; explain's hybrids).")  # fmt: skip
@handled
def images_list(config_path: Path | None, everything: bool) -> None:
    """This project's images (built from its Dockerfiles, and the bootstrapped bases they
    start from): from which Dockerfile, and when."""
    engine = _configured_engine(config_path)
    built = engine.images("io.reprocheck")
    bases = engine.images("io.reprocheck.bootstrap")
    if not everything:
        config = load_config(config_path)
        contexts = project_contexts(config)
        built = [i for i in built if _of_project(i, config.root, contexts)]
        used = {ref for i in built for ref in _bases_of(i)}
        bases = [i for i in bases if used & {*i.tags, i.ref}]
    print_images(out, built, bases, _pushed(config_path))


def _pushed(config_path: Path | None) -> dict[str, str]:
    """Image ID -> the digest reference the project's lock file records for it."""
    try:
        config = load_config(config_path)
    except ConfigError:
        if config_path is not None:
            raise
        return {}  # outside a project: no lock
    return pushed_references(config)  # a damaged lock is an error, as in a run


def _of_project(info: ImageInfo, root: Path, contexts: Set[str] = frozenset()) -> bool:
    """Built from one of the project's Dockerfiles (not a hybrid, which inherits the
    labels), or from an identical context elsewhere (``contexts``: the project would use it)."""
    if LABEL_HYBRID in info.labels:
        return False
    if info.labels.get(LABEL_CONTEXT) in contexts:
        return True
    dockerfile = info.labels.get(LABEL_DOCKERFILE)
    return dockerfile is not None and Path(dockerfile).resolve().is_relative_to(root.resolve())


def _bases_of(info: ImageInfo) -> list[str]:
    dockerfile = Path(info.labels.get(LABEL_DOCKERFILE, ""))
    return base_images(dockerfile) if dockerfile.is_file() else []


@images.command("prune")
@config_option
@handled
def images_prune(config_path: Path | None) -> None:
    """Remove explain's hybrid images and this project's images older than the newest one
    built from each Dockerfile (they are rebuilt or made again when needed)."""
    config = load_config(config_path)
    engine = _configured_engine(config_path)
    doomed = engine.images(LABEL_HYBRID)
    newest: dict[tuple[str, str], ImageInfo] = {}  # by Dockerfile and compose service
    for info in sorted(engine.images("io.reprocheck"), key=lambda i: i.created):
        if not _of_project(info, config.root):
            continue
        built_from = (info.labels[LABEL_DOCKERFILE], info.labels.get(LABEL_COMPOSE, ""))
        older = newest.get(built_from)
        if older is not None and older.id != info.id:
            doomed.append(older)
        newest[built_from] = info
    removed = [i for i in doomed if engine.remove_image(i.id)]
    freed = sum(i.size for i in removed) / 1e6
    out.print(f"removed {len(removed)} of {len(doomed)} image(s), {freed:,.0f} MB "
              "(an image a container still uses is kept)")  # fmt: skip


@main.command()
@config_option
@click.option("--all", "everything", is_flag=True,
              help="Also remove containers of runs still in progress (any owner) and the "
                   "input volumes other engines keep for later runs.")  # fmt: skip
@handled
def sweep(config_path: Path | None, everything: bool) -> None:
    """Remove containers (and other engines' volumes) left behind by runs whose reprocheck
    process is gone, on the local engine and every engine the config's environments name."""
    engines = [_configured_engine(config_path)]
    try:
        config = load_config(config_path)
    except ConfigError:
        if config_path is not None:
            raise
        config = None  # outside a project: the local engine only
    if config is not None:
        targets = {target_of(config, env, host) for env in config.environments
                   for host in env.hosts or (None,)}  # fmt: skip
        engines += [connect_target(t) for t in sorted(targets, key=lambda t: t.describe())
                    if not t.default]  # fmt: skip
    for engine in engines:
        containers = engine.sweep(everything=everything)
        volumes = engine.sweep_volumes(everything=everything)
        out.print(f"{engine.where}: removed {containers} container(s), {volumes} volume(s)")


def _configured_engine(config_path: Path | None) -> ContainerEngine:
    """The engine the project's images are built on (a config given but broken is an
    error; none found is fine outside a project)."""
    if config_path is not None:
        load_config(config_path)
    return get_engine(BUILD_ENGINE)


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(EXIT_OK)
