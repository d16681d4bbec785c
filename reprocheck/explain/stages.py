"""Stages: where, inside the pipeline, a drifting output's values first part.

The probes recorded inside the container (``reprocheck_probe.record``) are compared stage by
stage, per fixture (a command's probes are one set for the whole run, ``probes/all.npz``,
used for every output). Each record also notes the shared libraries its process mapped since
the previous one (what that stage loaded); runs recorded before that have none, and then what
a stage computes is read from its name and the output's (see ``suspects.PURE_PYTHON``).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reprocheck.compare import Tolerance, compare_arrays
from reprocheck.errors import OutputError
from reprocheck.outputs import OutputReader, OutputRef, index_file

# The probes of a command pipeline, which has no fixtures: <meta>/probes/all.npz
# (harness/reprocheck_probe.py's COMMAND_FIXTURE).
COMMAND_PROBES = "all"

# The libraries each stage loaded (harness/reprocheck_probe.py's LIBRARIES_SUFFIX and _DIR).
LIBRARIES_SUFFIX = ".libraries.json"
LIBRARIES_DIR = "libraries"
# Written by the pipeline's processes: read only this much of each file, and this many files.
LIBRARIES_MAX_BYTES = 8 << 20
LIBRARIES_MAX_FILES = 10_000

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


def stage_libraries(meta: Path, fixture: str) -> dict[str, tuple[str, ...]] | None:
    """Stage -> the shared libraries its process mapped since the previous record, for one
    fixture's probes (a command's: every record file of its processes, in the order they were
    made, named as the joined probes are); None when the run did not record them."""
    probes = meta / "probes"
    if fixture == COMMAND_PROBES and (probes / LIBRARIES_DIR).is_dir():
        return _command_libraries(probes / LIBRARIES_DIR)
    data = _read_json(probes / f"{fixture}{LIBRARIES_SUFFIX}")
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return None
    return {str(k): _paths(v) for k, v in stages.items()}


def _command_libraries(folder: Path) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
    for name in names[:LIBRARIES_MAX_FILES]:
        data = _read_json(folder / name)
        if isinstance(data, dict) and isinstance(data.get("stage"), str):
            found[unique_name(data["stage"], found)] = _paths(data.get("libraries"))
    return found


def unique_name(name: str, taken: Iterable[str]) -> str:
    """As the harness names a stage recorded again: ``name#2``, ``name#3``..."""
    taken = set(taken)
    suffix, unique = 2, name
    while unique in taken:
        unique, suffix = f"{name}#{suffix}", suffix + 1
    return unique


def _read_json(path: Path) -> Any:
    """A small regular file's JSON (never a link), or None."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > LIBRARIES_MAX_BYTES:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _paths(value: Any) -> tuple[str, ...]:
    return tuple(str(p) for p in value) if isinstance(value, list) else ()


def loaded_at(base: Path, cand: Path, fixture: str, stage: Stage | None) -> tuple[str, ...] | None:
    """The libraries the first divergent ``stage`` loaded on either side, or None when that
    is not known (no stage, or probes from before libraries were recorded)."""
    if stage is None:
        return None
    sides = [stage_libraries(meta, fixture) for meta in (base, cand)]
    known = [s for s in sides if s is not None and stage[0] in s]
    if not known:
        return None
    return tuple(sorted({p for s in known for p in s[stage[0]]}))
