"""The data model of explain: suspects, experiments, their effects, causes and attributions.

Closed sets are ``StrEnum`` members, so JSON written from them holds the same strings as
before (``"knob"``, ``"package"``, ``"ok"``...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

# Packages whose libraries cannot be mixed into another release by LD_LIBRARY_PATH: the C
# library and loader, the C++ runtime every library links, and the Python interpreter itself.
NOT_TRANSPLANTABLE = re.compile(r"^(libc6|libc-bin|libgcc-s1|libstdc\+\+6|libpython3.*|python3.*)$")


class CauseKind(StrEnum):
    STAGE = "stage"  # where in the pipeline the values first part
    KNOB = "knob"  # an environment variable that steers numerics
    PACKAGE = "package"  # a library, proven (or partly proven) by a transplant
    VERSION = "version"  # a version change no experiment settled: a ranked suspect
    CPU = "cpu"  # the pair's CPUs differ (models, or the features the pipeline saw)


class SuspectKind(StrEnum):
    LIBRARY = "library"  # a Debian package owning shared libraries the pipeline loaded
    INTERPRETER = "interpreter"  # CPython: python3.X and libpython3.X, or the pip image's
    DISTRIBUTION = "distribution"  # a pip-installed distribution (and its bundled .libs)


class ExperimentKind(StrEnum):
    KNOB = "knob"
    TRANSPLANT = "transplant"


class Sides(StrEnum):
    """Which environments of the pair an experiment ran in."""

    CANDIDATE = "candidate"  # a transplant: the candidate with the baseline's libraries
    BASELINE = "baseline"  # a forward glibc transplant: the baseline with the candidate's glibc
    BOTH = "both"  # a knob: the baseline and the candidate, each with the knob set


class Transplant(StrEnum):
    """How a transplant moves a suspect from one image into the other's hybrid."""

    LIBRARIES = "libraries"  # same-SONAME libraries, loaded first through LD_LIBRARY_PATH
    GLIBC = "glibc"  # the older side's userland under the newer side's loader and libc/libm
    DISTRIBUTION = "distribution"  # a pip distribution's files, in place of the other's


class Status(StrEnum):
    """An experiment's outcome: the runner's environment statuses plus explain's own."""

    PLANNED = "planned"
    OK = "ok"
    PARTIAL = "partial"
    ERROR = "error"
    CRASH = "crash"
    TIMEOUT = "timeout"
    OOM = "oom"
    INTERRUPTED = "interrupted"
    NOT_TRANSPLANTABLE = "not_transplantable"  # no library with the same SONAME: not run

    @property
    def ran(self) -> bool:
        """The pipeline ran and wrote outputs that can be measured."""
        return self in (Status.OK, Status.PARTIAL)


class Effect(StrEnum):
    """What one experiment did to one drifting output, strongest first."""

    FOLLOWS = "follows"  # the candidate now equals the baseline (as the run's rules compare)
    AGREES = "agrees"  # with the knob on both sides, baseline and candidate agree
    CHANGED = "changed"  # the output moved, but the pair still differs
    UNCHANGED = "unchanged"  # the output is bit-identical to the candidate's own
    FAILED = "failed"  # the experiment did not run, or the output is missing


@dataclass(frozen=True, kw_only=True)
class Cause:
    factor: str
    kind: CauseKind
    evidence: str
    confidence: float  # 0..1; the values are named in attribute.py


@dataclass(frozen=True, kw_only=True)
class Attribution:
    output: str
    baseline: str
    candidate: str
    fixture: str | None
    causes: tuple[Cause, ...]
    ruled_out: tuple[str, ...] = ()
    family: str = ""  # the output without its fixture: one advice per family and pair
    advice: str = ""  # one sentence: what to do, from the winning experiment


@dataclass(frozen=True, kw_only=True)
class Suspect:
    """A version change between the pair that may explain drift."""

    package: str
    baseline_version: str | None
    candidate_version: str | None
    libraries: tuple[str, ...]  # loaded in the candidate environment
    transplant: dict[str, str] = field(default_factory=dict)  # soname -> path in baseline image
    score: int = 0  # how well the package fits the drifting outputs and stages
    kind: SuspectKind = SuspectKind.LIBRARY
    # a transplant other than by SONAME applies: glibc forward (both glibc versions known and
    # different), or a pip distribution on the same CPython ABI, installed on both sides
    movable: Transplant | None = None

    @property
    def transplantable(self) -> bool:
        return self.movable is not None or (
            self.kind is SuspectKind.LIBRARY
            and bool(self.transplant)
            and not NOT_TRANSPLANTABLE.match(self.package)
        )

    @property
    def how(self) -> Transplant:
        """How this suspect is transplanted (by SONAME unless it moves another way)."""
        return self.movable or Transplant.LIBRARIES

    @property
    def loaded(self) -> bool:
        return bool(self.libraries) or self.kind is SuspectKind.INTERPRETER

    def change(self) -> str:
        return f"{self.package} {self.baseline_version} -> {self.candidate_version}"


@dataclass(frozen=True, kw_only=True)
class CpuDifference:
    """The pair's CPUs as their pipelines saw them, when they differ: the models (an emulated
    one as ``x86-64-v2 (qemu-user -cpu Nehalem)``) and the features numpy found on one side
    only."""

    baseline_model: str
    candidate_model: str
    baseline_only: tuple[str, ...] = ()
    candidate_only: tuple[str, ...] = ()

    def describe(self, base: str, cand: str) -> str:
        text = f"{self.baseline_model} in {base}, {self.candidate_model} in {cand}"
        for side, features in ((base, self.baseline_only), (cand, self.candidate_only)):
            if features:
                shown = ", ".join(features[:8]) + (", ..." if len(features) > 8 else "")
                text += f"; numpy finds {shown} only in {side}"
        return text


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """One single-factor change of a pair, and where its outputs went once it ran."""

    kind: ExperimentKind
    factor: str
    environment: str  # the candidate
    baseline: str = ""  # the baseline, which a knob runs in too
    env: Mapping[str, str] = field(default_factory=dict)  # the candidate side's variables
    baseline_env: Mapping[str, str] = field(default_factory=dict)  # the baseline side's
    suspect: Suspect | None = None
    extra: tuple[Suspect, ...] = ()  # more packages transplanted together with suspect
    outputs_dir: Path | None = None  # the candidate side's outputs
    baseline_outputs_dir: Path | None = None  # the baseline side's (a knob)
    status: Status = Status.PLANNED
    cached: bool = False
    seconds: float = 0.0
    # a transplant's modified side: the candidate, or the baseline for glibc moved forward
    target: Sides = Sides.CANDIDATE
    # what a transplant moved, in words: the glibc version and libraries moved forward
    moved: str = ""
    # a transplant run together with a knob set on both sides (``env``/``baseline_env``):
    # the knob's name, and where the other side ran with it
    knob: str = ""
    reference_outputs_dir: Path | None = None

    @property
    def combined(self) -> bool:
        """More than one factor: several packages, or a transplant with a knob."""
        return bool(self.extra) or bool(self.knob)

    @property
    def sides(self) -> Sides:
        return Sides.BOTH if self.kind is ExperimentKind.KNOB else self.target

    @property
    def modified(self) -> str:
        """The environment a transplant changed."""
        return self.baseline if self.target is Sides.BASELINE else self.environment

    @property
    def reference(self) -> str:
        """The environment whose outputs the changed side should come to equal."""
        return self.environment if self.target is Sides.BASELINE else self.baseline

    @property
    def suspects(self) -> tuple[Suspect, ...]:
        return () if self.suspect is None else (self.suspect, *self.extra)

    def describe(self) -> str:
        text = self._describe()
        if self.knob:
            text += f", and {self.knob} on both sides ({_assignments(self.env)})"
        return text

    def _describe(self) -> str:
        if self.kind is ExperimentKind.TRANSPLANT and self.suspect is not None:
            match self.suspect.how:
                case Transplant.GLIBC:
                    return f"{self.modified} under {self.reference}'s glibc {self.moved}"
                case Transplant.DISTRIBUTION:
                    return (f"{self.environment} with the baseline's pip distribution "
                            f"{self.suspect.package} {self.suspect.baseline_version} (its "
                            "package folders, dist-info and bundled libraries)")  # fmt: skip
                case Transplant.LIBRARIES:
                    pass
            parts = [
                f"{s.package} {s.baseline_version} ({', '.join(sorted(s.transplant))})"
                for s in self.suspects
            ]
            return f"{self.environment} with the baseline's libraries of {' and '.join(parts)}"
        return f"{self.environment} with {_assignments(self.env)}"

    def describe_baseline(self) -> str:
        return f"{self.baseline} with {_assignments(self.baseline_env)}"


def _assignments(env: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items())


@dataclass(frozen=True, kw_only=True)
class Explanation:
    attributions: tuple[Attribution, ...]
    experiments: tuple[Experiment, ...]
