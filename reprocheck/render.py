"""Terminal rendering with rich: progress and the run summary. Used only by the CLI."""

from __future__ import annotations

import re
from types import TracebackType

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
from reprocheck.explain import Explanation
from reprocheck.matrix import Matrix, OutputComparison
from reprocheck.progress import ProgressEvent
from reprocheck.report.aggregate import agreement_patterns, pattern
from reprocheck.report.json_report import fingerprint_summary
from reprocheck.run_model import RunResult

# Control characters other than newline and tab: a pipeline's output names and error texts
# may hold terminal escape sequences, which are shown as text, never sent to the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(text: str) -> str:
    """User text for rich: markup escaped and control characters shown as ``\\x1b``."""
    return escape_markup(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


VERDICT_STYLE = {
    "identical": "green",
    "within_tolerance": "cyan",
    "drift": "bold red",
    "incomparable": "magenta",
    "missing": "yellow",
    "error": "red",
    "nondeterministic": "blue",
}
STATUS_STYLE = {"ok": "green", "partial": "yellow"}
WORST_SHOWN = 10


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

    def __init__(self, console: Console, *, quiet: bool, verbose: bool) -> None:
        self._console = console
        self._quiet = quiet
        self._verbose = verbose
        self._bars = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressPrinter:
        if not self._quiet:
            self._bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        if event.finished or event.stage == "pull" or self._verbose:
            text = f"[bold]{event.stage}[/] {escape(event.subject)}: {escape(event.message)}"
            self._bars.console.print(text, soft_wrap=True, highlight=False)


def _env_table(result: RunResult) -> Table:
    table = Table(title="environments", title_justify="left")
    for column in ("environment", "status", "seconds", "image", "os", "glibc", "python",
                   "numpy", "cv2"):  # fmt: skip
        table.add_column(column)
    for env in result.environments:
        fp = fingerprint_summary(env)
        style = STATUS_STYLE.get(env.status, "red")
        table.add_row(
            env.name, f"[{style}]{env.status}[/]", f"{env.seconds:.1f}",
            (env.image_id or "-")[7:19], fp["os"] or "-", fp["glibc"] or "-",
            fp["python"] or "-", fp["numpy"] or "-", fp["cv2"] or "-",
        )  # fmt: skip
    return table


def _pair_table(matrix: Matrix) -> Table:
    totals = matrix.counts()
    verdicts = [v for v in VERDICT_STYLE if totals.get(v)]
    table = Table(title="verdicts per pair", title_justify="left")
    table.add_column("baseline -> candidate")
    for verdict in verdicts:
        table.add_column(f"[{VERDICT_STYLE[verdict]}]{verdict}[/]", justify="right")
    per_pair = matrix.comparisons.pair_counts()
    for base, cand in matrix.pairs:
        counts = per_pair.get((base, cand), {})
        table.add_row(f"{base} -> {cand}", *(str(counts.get(v, 0)) for v in verdicts))
    return table


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else f"{value:,}"


def _worst_table(matrix: Matrix) -> Table | None:
    drifting = matrix.comparisons.where({"drift"})
    if not len(drifting):
        return None
    table = Table(title=f"worst drifting outputs ({len(drifting)} in all)", title_justify="left")
    for column in ("output", "pair", "mismatched", "max_abs", "max_rel", "max_ulp", "decisions"):
        table.add_column(column)
    for item in drifting.worst(WORST_SHOWN):
        m = item.metrics
        assert m is not None
        changed = f"{m.decision.decisions_changed} of {m.decision.total}" if m.decision else "-"
        table.add_row(
            escape(item.output), escape(f"{item.baseline}->{item.candidate}"),
            f"{m.mismatched:,} / {m.total:,} ({100 * m.mismatched / max(m.total, 1):.1f}%)",
            _fmt(m.max_abs), _fmt(m.max_rel), _fmt(m.max_ulp), changed,
        )  # fmt: skip
    return table


def _agreement_lines(matrix: Matrix) -> list[str]:
    return [f"  {p['outputs']:4d} outputs: {pattern(p['classes'])}"
            for p in agreement_patterns(matrix.agreement)]  # fmt: skip


def decision_line(item: OutputComparison) -> str | None:
    """'probabilities drift by 594 ULP; 0 of 359 labels changed; the closest call's margin
    is 39,000x the drift' for outputs declared as decisions."""
    m = item.metrics
    if m is None or m.decision is None or m.verdict == "identical":
        return None
    d = m.decision
    text = (f"{item.output} ({item.baseline}->{item.candidate}) drifts by {_fmt(m.max_ulp)} ULP "
            f"(max_abs {_fmt(m.max_abs)}); {d.decisions_changed} of {d.total} {d.kind} "
            "decisions changed")  # fmt: skip
    if d.min_margin is not None and m.max_abs:
        text += f"; the closest call's margin is {d.min_margin / m.max_abs:,.0f}x the drift"
    return text


def _decision_lines(matrix: Matrix) -> list[str]:
    lines = [line for item in matrix.comparisons.with_decisions() if (line := decision_line(item))]
    changed = [line for line in lines if not re.search(r"; 0 of \d+", line)]
    return (changed or lines)[:WORST_SHOWN]


def print_summary(console: Console, result: RunResult, matrix: Matrix, *, quiet: bool) -> None:
    counts = matrix.counts()
    verdict = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "nothing compared"
    if not quiet:
        for line in _decision_lines(matrix):
            console.print(f"[bold]decision[/] {escape(line)}", soft_wrap=True, highlight=False)
        console.print(_env_table(result))
        for env in result.environments:
            if env.error:
                console.print(f"[red]{env.name}[/]: {escape(env.error)}", soft_wrap=True)
        console.print(_pair_table(matrix))
        worst = _worst_table(matrix)
        if worst is not None:
            console.print(worst)
        console.print("agreement classes (environments with bit-identical outputs):")
        for line in _agreement_lines(matrix):
            console.print(line, highlight=False)
        for noise in matrix.noise:
            spread = f"max_abs {_fmt(noise.max_abs)}, max_ulp {_fmt(noise.max_ulp)}"
            console.print(
                f"[blue]nondeterministic[/] {noise.output} in {noise.environment}: spread {spread}"
            )
    console.print(f"run {result.run_id}: {verdict}")


def print_images(console: Console, built: list[ImageInfo], bases: list[ImageInfo]) -> None:
    table = Table(title="reprocheck images", title_justify="left")
    for column in ("image", "id", "from", "created", "size"):
        table.add_column(column)
    for info in [*bases, *built]:
        origin = info.labels.get("io.reprocheck.dockerfile") or (
            f"debootstrap {info.labels.get('io.reprocheck.bootstrap', '')}"
        )
        created = info.created[:19].replace("T", " ") if info.created else "-"
        table.add_row(", ".join(info.tags) or info.ref, info.id[7:19], origin, created,
                      f"{info.size / 1e6:,.0f} MB")  # fmt: skip
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
    runs = len(explanation.experiments)
    cached = sum(e.cached for e in explanation.experiments)
    console.print(f"{len(explanation.attributions)} drifting outputs explained with {runs} "
                  f"experiments ({cached} cached) in {seconds:.1f} s")  # fmt: skip
