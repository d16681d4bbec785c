"""Terminal rendering with rich: progress and the run summary. Used only by the CLI."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from reprocheck.engine import ImageInfo
from reprocheck.progress import ProgressEvent
from reprocheck.report.common import (
    VERSION_KEYS,
    Report,
    agreement_groups,
    decision_lines,
    decisions_text,
    escaped,
    image_change_lines,
    listing_note,
    metric_environments,
    metric_rows,
    mismatch_text,
    nothing_compared,
    number,
    ordered_verdicts,
    pair_counts,
    pair_label,
    pairs,
    problems,
    total_counts,
    ulp_text,
    version,
    worst,
)

if TYPE_CHECKING:
    from reprocheck.explain import Explanation

# Control characters other than newline and tab: a pipeline's output names and error texts
# may hold terminal escape sequences, which are shown as text, never sent to the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(text: str) -> str:
    """User text for rich: markup escaped and control characters shown as ``\\x1b``."""
    return escape_markup(escaped(_CONTROL, text))


VERDICT_STYLE = {
    "identical": "green",
    "within_tolerance": "cyan",
    "drift": "bold red",
    "incomparable": "magenta",
    "missing": "yellow",
    "error": "red",
    "nondeterministic": "blue",
    "new": "cyan",
}
STATUS_STYLE = {"ok": "green", "partial": "yellow", "mixed_cpu": "yellow"}
WORST_SHOWN = 10
METRICS_SHOWN = 20
HEARTBEAT = 30.0  # seconds without a printed line before one says the run is still going


_STEP = re.compile(r"^Step (\d+)/(\d+)")
# debootstrap prints no counts; its phases in order give a rough bar.
_BOOTSTRAP_PHASES = ("Retrieving", "Validating", "Extracting", "Installing", "Unpacking",
                     "Configuring", "Base system installed", "importing")  # fmt: skip


def _position(event: ProgressEvent) -> tuple[int | None, int | None]:
    """(done, total) for a bar: from the event, a build step line or a debootstrap phase."""
    if event.total is not None:
        return event.done, event.total
    step = _STEP.match(event.message)
    if event.stage == "build" and step:
        return int(step[1]) - 1, int(step[2])
    if event.stage == "bootstrap":
        text = event.message.removeprefix("I: ")
        phase = next((i for i, p in enumerate(_BOOTSTRAP_PHASES) if text.startswith(p)), None)
        total = len(_BOOTSTRAP_PHASES)
        return (total if event.finished else phase), total
    return None, None


class ProgressPrinter:
    """Renders library progress events as rich progress bars (one per environment run set,
    image build and bootstrap) and a permanent line for every finished step."""

    def __init__(
        self, console: Console, *, quiet: bool, verbose: bool, heartbeat: float = HEARTBEAT
    ) -> None:
        self._console = console
        self._quiet = quiet
        self._verbose = verbose
        # Without a terminal (CI logs) the bars show nothing: a line at least every
        # ``heartbeat`` seconds says what is still going on.
        self._heartbeat = heartbeat if not console.is_terminal and not quiet else None
        self._last = (time.monotonic(), "starting")
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None
        self._bars = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressPrinter:
        if not self._quiet:
            self._bars.start()
        if self._heartbeat is not None:
            self._beating = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
            self._beating.start()
        return self

    def _beat(self) -> None:
        assert self._heartbeat is not None
        while not self._stop.wait(self._heartbeat / 4):
            last, what = self._last
            if time.monotonic() - last >= self._heartbeat:
                elapsed = time.monotonic() - self._started
                self._console.print(f"still working ({elapsed:.0f} s): {escape(what)}",
                                    soft_wrap=True, highlight=False)  # fmt: skip
                self._last = (time.monotonic(), what)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.join()
        self._bars.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if self._quiet:
            return
        key = "run" if event.stage == "run" else f"{event.stage}:{event.subject}"
        done, total = _position(event)
        label = f"{event.stage} {event.subject}" if event.stage != "run" else "run"
        if key not in self._tasks:
            self._tasks[key] = self._bars.add_task(label, total=total)
        update: dict[str, object] = {"description": escape(f"{label}: {event.message[:70]}")}
        if done is not None:
            update |= {"completed": done, "total": total}
        self._bars.update(self._tasks[key], **update)  # type: ignore[arg-type]
        what = f"{event.stage} {event.subject}: {event.message[:120]}"
        if event.finished or event.stage in ("pull", "push") or self._verbose:
            text = f"[bold]{event.stage}[/] {escape(event.subject)}: {escape(event.message)}"
            self._bars.console.print(text, soft_wrap=True, highlight=False)
            self._last = (time.monotonic(), what)
        else:
            self._last = (self._last[0], what)


def _env_table(report: Report) -> Table:
    table = Table(title="environments", title_justify="left")
    for column in ("environment", "status", "seconds", "image", *VERSION_KEYS):
        table.add_column(column)
    for env in report.get("environments") or []:
        status = str(env.get("status"))
        style = STATUS_STYLE.get(status, "red")
        table.add_row(
            escape(str(env.get("name"))), f"[{style}]{escape(status)}[/]",
            f"{float(env.get('seconds') or 0.0):.1f}", str(env.get("image_id") or "-")[7:19],
            *(escape(version(env, key)) for key in VERSION_KEYS),
        )  # fmt: skip
    return table


def _pair_table(report: Report) -> Table:
    verdicts = ordered_verdicts(total_counts(report))
    table = Table(title="verdicts per pair", title_justify="left")
    table.add_column("baseline -> candidate")
    for verdict in verdicts:
        table.add_column(f"[{VERDICT_STYLE.get(verdict, 'red')}]{verdict}[/]", justify="right")
    for base, cand in pairs(report):
        counts = pair_counts(report, base, cand)
        table.add_row(escape(f"{base} -> {cand}"), *(str(counts.get(v, 0)) for v in verdicts))
    return table


def _worst_table(report: Report) -> Table | None:
    drifting = worst(report, frozenset({"drift"}))
    if not drifting:
        return None
    total = total_counts(report).get("drift", len(drifting))
    table = Table(title=f"worst drifting outputs ({total} in all)", title_justify="left")
    for column in ("output", "pair", "max_abs", "max_rel", "mismatched", "ULP", "decisions"):
        table.add_column(column)
    for item in drifting[:WORST_SHOWN]:
        table.add_row(
            escape(str(item["output"])), escape(pair_label(item["baseline"], item["candidate"])),
            number(item.get("max_abs")), number(item.get("max_rel")), mismatch_text(item),
            ulp_text(item), decisions_text(item),
        )  # fmt: skip
    return table


def _metric_table(report: Report) -> Table | None:
    rows = metric_rows(report)
    if not rows:
        return None
    table = Table(title="metrics (the first environment, then each one's change)",
                  title_justify="left")  # fmt: skip
    table.add_column("metric")
    for name in metric_environments(report):
        table.add_column(escape(name), justify="right")
    for output, cells in rows[:METRICS_SHOWN]:
        table.add_row(escape(output), *(escape(c) for c in cells))
    return table


PROBLEMS_SHOWN = 10  # output errors named in the terminal


def print_summary(console: Console, report: Report, *, quiet: bool) -> None:
    """The run's summary, from the report (the model every report file renders from too)."""
    counts = total_counts(report)
    verdict = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or nothing_compared(report)
    if not quiet:
        _print_environments(console, report)
        _print_outputs(console, report)
    console.print(f"run {escape(str(report.get('run_id', '?')))}: {verdict}")


def _print_environments(console: Console, report: Report) -> None:
    """Decisions, the environments and their metrics, refreshed images, failures."""
    for line in decision_lines(report, WORST_SHOWN):
        console.print(f"[bold]decision[/] {escape(line)}", soft_wrap=True, highlight=False)
    console.print(_env_table(report))
    metrics = _metric_table(report)
    if metrics is not None:
        console.print(metrics)
    for line in image_change_lines(report):
        console.print(f"[yellow]refreshed[/] {escape(line)}", soft_wrap=True, highlight=False)
    for env in report.get("environments") or []:
        if env.get("error"):
            console.print(f"[red]{escape(str(env.get('name')))}[/]: "
                          f"{escape(str(env['error']))}", soft_wrap=True)  # fmt: skip


def _print_outputs(console: Console, report: Report) -> None:
    """Per-pair counts, the worst outputs, agreement classes, nondeterminism."""
    console.print(_pair_table(report))
    table = _worst_table(report)
    if table is not None:
        console.print(table)
    if (note := listing_note(report)) is not None:
        console.print(escape(note), highlight=False)
    console.print("agreement classes (environments with bit-identical outputs):")
    for pattern, count in agreement_groups(report):
        console.print(f"  {count:4d} outputs: {escape(pattern)}", highlight=False)
    for noise in report.get("nondeterministic") or []:
        spread = f"max_abs {number(noise.get('max_abs'))}, max_ulp {number(noise.get('max_ulp'))}"
        console.print(f"[blue]nondeterministic[/] {escape(str(noise.get('output')))} in "
                      f"{escape(str(noise.get('environment')))}: spread {spread}")  # fmt: skip
    _print_output_errors(console, report)


def _print_output_errors(console: Console, report: Report) -> None:
    """Outputs in error, missing or incomparable, grouped by cause (an error is what made
    the run exit 2); failed environments are named with the environments."""
    failed = sum(1 for env in report.get("environments") or [] if env.get("status") != "ok")
    lines = problems(report)[failed:]
    if lines:
        console.print("outputs in error, missing or incomparable:")
    for line in lines[:PROBLEMS_SHOWN]:
        console.print(f"  {escape(line)}", soft_wrap=True, highlight=False)
    if len(lines) > PROBLEMS_SHOWN:
        console.print(f"  …and {len(lines) - PROBLEMS_SHOWN} more (report.json lists them)")


def print_images(
    console: Console,
    built: list[ImageInfo],
    bases: list[ImageInfo],
    pushed: Mapping[str, str] | None = None,
) -> None:
    """The images table; ``pushed``: image ID -> its digest reference in the lock file."""
    pushed = pushed or {}
    table = Table(title="reprocheck images", title_justify="left")
    columns = ("image", "id", "from", "created", "size", *(("pushed",) if pushed else ()))
    for column in columns:
        table.add_column(column)
    for info in [*bases, *built]:
        origin = info.labels.get("io.reprocheck.dockerfile") or (
            f"debootstrap {info.labels.get('io.reprocheck.bootstrap', '')}"
        )
        created = info.created[:19].replace("T", " ") if info.created else "-"
        row = [", ".join(info.tags) or info.ref, info.id[7:19], origin, created,
               f"{info.size / 1e6:,.0f} MB"]  # fmt: skip
        table.add_row(*row, *((pushed.get(info.id, "-"),) if pushed else ()))
    console.print(table)


def print_explanation(console: Console, explanation: Explanation, seconds: float) -> None:
    """One block per drifting output: its most likely causes with their evidence."""
    for item in explanation.attributions:
        pair = f"{item.baseline} -> {item.candidate}"
        console.print(f"[bold]{escape(item.output)}[/] {escape(pair)}")
        for cause in item.causes[:3]:
            line = f"  {cause.confidence:.2f} {cause.kind:8} {cause.factor}: {cause.evidence}"
            console.print(escape(line), soft_wrap=True)
        if item.ruled_out:
            console.print(escape(f"  ruled out: {', '.join(item.ruled_out)}"), soft_wrap=True)
    from reprocheck.explain import advice_by_family  # the explain package is heavy to import

    families = advice_by_family(explanation.attributions)
    if families:
        console.print("[bold]what to do[/]")
    for family in families:
        where = f"{family.family} ({family.outputs}) {family.baseline} -> {family.candidate}"
        console.print(escape(f"  {where}: {family.advice}"), soft_wrap=True)
    runs = len(explanation.experiments)
    cached = sum(e.cached for e in explanation.experiments)
    console.print(f"{len(explanation.attributions)} drifting outputs explained with {runs} "
                  f"experiments ({cached} cached) in {seconds:.1f} s")  # fmt: skip
