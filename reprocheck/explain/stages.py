"""Stages: where, inside the pipeline, a drifting output's values first part.

The probes recorded inside the container (``reprocheck_probe.record``) are compared stage by
stage, per fixture (a command's probes are one set for the whole run, ``probes/all.npz``,
used for every output). Loaded libraries are recorded once per process, not per stage, so
what a stage "used" is read from its name and the output's (see ``suspects.PURE_PYTHON``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from reprocheck.compare import Tolerance, compare_arrays
from reprocheck.errors import OutputError
from reprocheck.outputs import OutputReader, OutputRef, index_file

# The probes of a command pipeline, which has no fixtures: <meta>/probes/all.npz
# (harness/reprocheck_probe.py's COMMAND_FIXTURE).
COMMAND_PROBES = "all"

Stage = tuple[str, str]  # (stage name, evidence)


def _probes(meta: Path, fixture: str) -> dict[str, OutputRef]:
    """The readable probe records of one fixture, by ``<order>:<stage>``; the probes folder
    is written by the pipeline, so it is read like outputs (no links, no pickle)."""
    prefix = f"{fixture}/"
    refs = index_file(meta / "probes", f"{fixture}.npz")
    return {
        name.removeprefix(prefix): ref
        for name, ref in refs.items()
        if name.startswith(prefix) and ref.error is None and ref.kind == "npz"
    }


def _stage_order(key: str) -> tuple[int, str]:
    number = key.partition(":")[0]
    return (int(number) if number.isdigit() else 1 << 62, key)


def first_divergent_stage(
    base: Path, cand: Path, fixture: str, where: str | None = None
) -> Stage | None:
    """(stage, evidence) for the first probe whose value differs, or None without probes;
    ``where`` names the probes in the evidence (default: the fixture)."""
    a, b = _probes(base, fixture), _probes(cand, fixture)
    if not (a and b):
        return None
    with OutputReader() as reader:
        stages = [k for k in a if k in b]
        same: list[str] = []
        for key in sorted(stages, key=_stage_order):
            try:
                result = compare_arrays(reader.load(a[key]), reader.load(b[key]), Tolerance())
            except OutputError:
                continue
            name = key.partition(":")[2]
            if result.verdict != "identical":
                detail = f"max_abs {result.max_abs}, {result.mismatched} of {result.total} differ"
                before = f"; identical before it: {', '.join(same)}" if same else ""
                return (
                    name,
                    f"first divergent recorded stage of {where or fixture}: {name} "
                    f"({detail}){before}",
                )
            same.append(name)
    return None


def fixture_of(output: str, fixtures: Iterable[str]) -> str | None:
    matches = [f for f in fixtures if output.startswith(f + "/")]
    return max(matches, key=len) if matches else None


def family_of(output: str, fixture: str | None) -> str:
    """The output's name without its fixture: the same family across fixtures."""
    return output[len(fixture) + 1 :] if fixture is not None else output


def stage_words(output: str, fixture: str | None, stage: Stage | None) -> str:
    """What hints match against: the output's name without its fixture (a fixture called
    'x.jpg' says nothing about a libm output) and its first divergent stage."""
    return family_of(output, fixture) + (f" {stage[0]}" if stage else "")
