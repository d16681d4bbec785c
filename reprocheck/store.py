"""Stored runs: the run.json manifest, ``reports/latest``, atomic writes, lookup by id.

Reading a run trusts nothing in its folder: a container wrote part of it. run.json and every
meta/fingerprint.json are read without following symlinks, and any damage (truncated JSON, a
list where an object belongs, a missing key, a value of the wrong type) is one
:class:`StoredRunError` naming the file and what is wrong, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, get_args

from reprocheck.errors import ConfigError, RunNotFoundError, StoredRunError, UnsafeFileError
from reprocheck.run_model import (
    META_FILE_BYTES,
    EnvironmentResult,
    EnvStatus,
    FixtureResult,
    FixtureState,
    ImageChange,
    PackageChange,
    RunResult,
)
from reprocheck.safe_files import json_kind, read_json_object

MANIFEST = "run.json"
# The report files of a run folder (reprocheck.stages and report.writers write them).
REPORT_FILE = "report.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
COMPARISONS_FILE = "comparisons.parquet"  # every comparison, next to report.json
MANIFEST_VERSION = 1
LATEST = "latest"
FINGERPRINT = "fingerprint.json"  # in an environment's meta folder, written by the harness
# Far above any real manifest or fingerprint; a planted endless file stops here.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_FINGERPRINT_BYTES = META_FILE_BYTES  # the runner read it with the same limit
ENV_STATES: tuple[EnvStatus, ...] = get_args(EnvStatus)
FIXTURE_STATES: tuple[FixtureState, ...] = get_args(FixtureState)
_TEMP_ATTEMPTS = 16
_SHOWN_CHARS = 80
_FIX = "re-run 'reprocheck run', or restore the file"
_REQUIRED: Final = object()
_Choice = TypeVar("_Choice", bound=str)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers never see a half-written file."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What a run folder holds before its run.json is written (an interrupted run's), besides it
_RUN_ENTRIES = frozenset({"environments", "repeats"})


def check_run_folder(folder: Path, project: Path, option: str = "--out") -> None:
    """A run may write (and clear its environments' folders in) ``folder``: a new or empty
    folder, or an earlier run's; never the project folder, a folder holding it, or a folder of
    other files (ConfigError)."""
    folder, project = folder.resolve(), project.resolve()
    fix = f"name a new folder for the run ({option} reports/NAME), or an earlier run's folder"
    if project.is_relative_to(folder):
        raise ConfigError(f"{option} {folder} is the project folder or holds it", fix=fix)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is not a folder", fix=fix)
    try:
        entries = {entry.name for entry in folder.iterdir()} if folder.exists() else set()
    except OSError as exc:
        raise ConfigError(f"{option} {folder} cannot be read: {exc.strerror or exc}",
                          fix=fix) from exc  # fmt: skip
    if entries and MANIFEST not in entries and not entries <= _RUN_ENTRIES:
        shown = ", ".join(sorted(entries)[:3])
        raise ConfigError(f"{option} {folder} holds other files ({shown}) and no run "
                          f"({MANIFEST})", fix=fix)  # fmt: skip


RUN_FOLDERS_FILE = "run-folders.json"  # under the reports folder's cache: --out folders
_REMEMBERED = 256  # paths a record keeps, the newest


def remembered_paths(
    record: Path, field: str, keep: Callable[[Path], bool], add: Iterable[Path] = ()
) -> list[Path]:
    """The paths the JSON file ``record`` lists under ``field`` that ``keep`` still accepts
    (the newest :data:`_REMEMBERED`), then ``add``; written back when that changed. A record
    that cannot be read is empty; one that cannot be written is only not updated."""
    try:
        listed = read_json_object(record, 1 << 20).get(field)
    except (OSError, UnsafeFileError, ValueError, RecursionError):
        listed = None
    known = [f for f in listed if isinstance(f, str)] if isinstance(listed, list) else []
    found = [Path(f) for f in known if keep(Path(f))][-_REMEMBERED:]
    found += [path for path in dict.fromkeys(add) if path not in found]
    if [str(f) for f in found] != known:
        with contextlib.suppress(OSError):
            write_atomic(record, json.dumps({field: [str(f) for f in found]}))
    return found


def run_folders(cache: Path, project: Path, add: Path | None = None) -> list[Path]:
    """The run folders inside ``project`` that runs wrote with ``--out`` (kept in
    ``cache/run-folders.json``; ``add`` is recorded), those still there: hidden from
    containers like the reports folder, so one environment's pipeline cannot read another's
    outputs and an earlier run's files are no input of the next (``--out split/ENV`` per
    environment in a kept CI workspace). A record that cannot be read or written is empty."""
    project = project.resolve()

    def inside(path: Path) -> bool:
        return path.is_relative_to(project) and path != project

    return remembered_paths(cache / RUN_FOLDERS_FILE, "folders",
                            lambda path: inside(path) and _still_a_run(path),
                            [add] if add is not None and inside(add) else [])  # fmt: skip


def _still_a_run(path: Path) -> bool:
    """Whether ``path`` is still a run's folder: empty (a run about to start), or holding
    its manifest or environments. A folder put in its place with other files is an input
    again (and drops out of the record)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return False
        return (
            next(path.iterdir(), None) is None
            or (path / MANIFEST).is_file()
            or (path / "environments").is_dir()
        )
    except OSError:
        return False


def _env_json(env: EnvironmentResult, run_dir: Path) -> dict[str, Any]:
    data = asdict(env)
    data["outputs_dir"] = env.outputs_dir.relative_to(run_dir).as_posix()
    data["meta_dir"] = env.meta_dir.relative_to(run_dir).as_posix()
    data.pop("fingerprint")  # stored by the harness in meta/fingerprint.json
    return data


def save_run(result: RunResult, *, latest: bool = True) -> Path:
    """Write the manifest and, with ``latest``, point ``latest`` beside the run at it (only
    for runs in the reports folder: ``run --out DIR`` writes nothing outside DIR)."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "run_id": result.run_id,
        "config_source": str(result.config_source),
        "started": result.started,
        "environments": [_env_json(e, result.run_dir) for e in result.environments],
        "repeats": [_env_json(e, result.run_dir) for e in result.repeats],
    }
    path = result.run_dir / MANIFEST
    write_atomic(path, json.dumps(manifest, indent=1))
    if latest:
        point_latest(result.run_dir)
    return path


def point_latest(run_dir: Path) -> None:
    """Point ``reports/latest`` at ``run_dir``, atomically; concurrent runs never collide."""
    link = run_dir.parent / LATEST
    tmp = _temporary_symlink(run_dir.parent, run_dir.name)
    try:
        tmp.replace(link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _temporary_symlink(folder: Path, target: str) -> Path:
    """A new symlink to ``target`` under a name no other process uses (symlink creation is
    atomic and never replaces, so a clash is retried rather than overwritten)."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = folder / f".{LATEST}.{secrets.token_hex(8)}.tmp"
        try:
            tmp.symlink_to(target)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name for {folder / LATEST}")


# --------------------------------------------------------------------------- reading runs


@dataclass(frozen=True)
class _Fields:
    """Typed access to one JSON object of a stored file; a failure names the file and key."""

    path: Path
    where: str  # "environments[2]." for an entry, "" at the top
    data: dict[str, Any]

    def damaged(self, key: str, what: str) -> StoredRunError:
        return _damaged(self.path, f"{self.where}{key} {what}")

    def value(self, key: str, kinds: tuple[type, ...], default: Any = _REQUIRED) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.damaged(key, "is missing")
            return default
        value = self.data[key]
        # bool is an int to Python, never a count or a duration here.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.damaged(key, f"is {json_kind(value)}, expected {_kinds(kinds)}")
        return value

    def text(self, key: str) -> str:
        return str(self.value(key, (str,)))

    def optional_text(self, key: str, default: Any = _REQUIRED) -> str | None:
        """A string or null; missing only where ``default`` (None) allows it."""
        value = self.value(key, (str, type(None)), default)
        return None if value is None else str(value)

    def number(self, key: str, default: float) -> float:
        return self._float(key, self.value(key, (int, float), default))

    def optional_number(self, key: str) -> float | None:
        value = self.value(key, (int, float, type(None)), None)
        return None if value is None else self._float(key, value)

    def _float(self, key: str, value: int | float) -> float:
        try:
            return float(value)
        except OverflowError as exc:  # an integer of 400 digits
            raise self.damaged(key, "is a number too large for a float") from exc

    def integer(self, key: str, default: int) -> int:
        return int(self.value(key, (int,), default))

    def choice(self, key: str, choices: tuple[_Choice, ...]) -> _Choice:
        value = self.text(key)
        for choice in choices:
            if choice == value:
                return choice
        raise self.damaged(key, f"is {_shown(value)}, expected one of {', '.join(choices)}")

    def folder(self, key: str, run_dir: Path) -> Path:
        """A folder of the run, stored relative to it; never one outside."""
        text = self.text(key)
        value = Path(text)
        if value.is_absolute() or ".." in value.parts or "\0" in text:
            raise self.damaged(key, f"is {_shown(text)}, not a folder inside the run")
        return run_dir / value

    def objects(self, key: str, *, optional: bool = False) -> list[_Fields]:
        items = self.value(key, (list,), [] if optional else _REQUIRED)
        entries = []
        for index, item in enumerate(items):
            where = f"{self.where}{key}[{index}]"
            if not isinstance(item, dict):
                raise _damaged(self.path, f"{where} is {json_kind(item)}, expected an object")
            entries.append(_Fields(self.path, f"{where}.", item))
        return entries


def _shown(text: str) -> str:
    """``text`` quoted for a one-line message, shortened when long."""
    return repr(text) if len(text) <= _SHOWN_CHARS else repr(text[:_SHOWN_CHARS]) + "..."


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", list: "a list",
             dict: "an object", bool: "true/false", type(None): "null"}  # fmt: skip
    if float in kinds:  # a float field takes ints too: say "a number" once
        kinds = tuple(kind for kind in kinds if kind is not int)
    return " or ".join(names[kind] for kind in kinds)


def _damaged(path: Path, what: str) -> StoredRunError:
    return StoredRunError(f"{path} is damaged: {what}", fix=_FIX)


def _read_object(path: Path, limit: int) -> dict[str, Any]:
    """The JSON object in ``path``, read without following a symlink a pipeline planted."""
    try:
        return read_json_object(path, limit)
    except UnsafeFileError as exc:
        raise StoredRunError(exc.message, fix=_FIX) from exc


def _exists(path: Path) -> bool:
    """True for a file, and for a symlink too (even a dangling one): it must not be skipped."""
    return path.is_symlink() or path.exists()


def _fingerprint(meta: Path) -> dict[str, Any]:
    path = meta / FINGERPRINT
    return _read_object(path, MAX_FINGERPRINT_BYTES) if _exists(path) else {}


def _fixture_from_json(entry: _Fields) -> FixtureResult:
    return FixtureResult(
        fixture=entry.text("fixture"),
        status=entry.choice("status", FIXTURE_STATES),
        seconds=entry.optional_number("seconds"),
        error=entry.optional_text("error", None),
    )


def _env_from_json(entry: _Fields, run_dir: Path) -> EnvironmentResult:
    meta = entry.folder("meta_dir", run_dir)
    return EnvironmentResult(
        name=entry.text("name"),
        image=entry.text("image"),
        image_ref=entry.optional_text("image_ref"),
        image_id=entry.optional_text("image_id"),
        status=entry.choice("status", ENV_STATES),
        error=entry.optional_text("error"),
        outputs_dir=entry.folder("outputs_dir", run_dir),
        meta_dir=meta,
        fingerprint=_fingerprint(meta),
        fixtures=tuple(_fixture_from_json(f) for f in entry.objects("fixtures", optional=True)),
        seconds=entry.number("seconds", 0.0),
        repeat=entry.integer("repeat", 1),
        image_change=_image_change(entry),
        image_digest=entry.optional_text("image_digest", None),
        left_emulator=tuple(str(p) for p in entry.value("left_emulator", (list,), [])),
    )


def _image_change(entry: _Fields) -> ImageChange | None:
    value = entry.value("image_change", (dict, type(None)), None)
    if value is None:
        return None
    change = _Fields(entry.path, f"{entry.where}image_change.", value)
    return ImageChange(
        previous_run=change.text("previous_run"),
        previous_image=change.optional_text("previous_image", None),
        packages=tuple(
            PackageChange(
                package=p.text("package"),
                before=p.optional_text("before", None),
                after=p.optional_text("after", None),
            )
            for p in change.objects("packages", optional=True)
        ),
    )


def _check_version(manifest: _Fields) -> None:
    version = manifest.integer("manifest_version", MANIFEST_VERSION)
    if not 1 <= version <= MANIFEST_VERSION:
        raise manifest.damaged(
            "manifest_version", f"is {version}, this reprocheck reads 1 to {MANIFEST_VERSION}"
        )


def load_run(run_dir: Path) -> RunResult:
    """The run stored in ``run_dir``; a damaged or unsafe run.json or fingerprint.json raises
    :class:`StoredRunError` naming the file, a missing run.json :class:`RunNotFoundError`."""
    path = run_dir / MANIFEST
    if not _exists(path):
        raise RunNotFoundError(f"{run_dir} is not a reprocheck run: it has no {MANIFEST}",
                               fix="pass a run folder that 'reprocheck run' wrote")  # fmt: skip
    manifest = _Fields(path, "", _read_object(path, MAX_MANIFEST_BYTES))
    _check_version(manifest)
    resolved = run_dir.resolve()
    return RunResult(
        run_id=manifest.text("run_id"),
        run_dir=resolved,
        config_source=Path(manifest.text("config_source")),
        started=manifest.text("started"),
        environments=tuple(_env_from_json(e, resolved) for e in manifest.objects("environments")),
        repeats=tuple(
            _env_from_json(e, resolved) for e in manifest.objects("repeats", optional=True)
        ),
    )


def find_run(reports_dir: Path, ref: str | None) -> Path:
    """A run folder from an id, a path, or None/'latest' for the newest run."""
    candidates = [Path(ref), reports_dir / ref] if ref else [reports_dir / LATEST]
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate.resolve()
    what = f"run {ref!r}" if ref else "any run"
    raise RunNotFoundError(
        f"no stored {what} in {reports_dir}", fix="run 'reprocheck run' first or pass a run folder"
    )
