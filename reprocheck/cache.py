"""The result cache: an environment's run reused when nothing it depends on has changed.

A run of one environment is a function of what its container sees and of the machine it runs
on. Its key is the sha256 of a canonical JSON of:

* the container spec (image ID, command, environment variables, user, limits, platform, ...;
  everything but the labels and the host paths of the mounts),
* a digest of every file each read-only mount shows the container: the project (without the
  folders hidden from it, version control and tool caches, and the config file, whose
  run-relevant parts are keyed as settings), the fixtures, the harness, the CA bundle;
* the pipeline settings and planned fixtures, and a pyproject.toml config's tables other than
  reprocheck's (the container sees the file: a pipeline may read its own settings there),
* reprocheck's version and this host's CPU (architecture, model, flags and count): the same
  image computes differently on another CPU.

An entry is ``reports/.cache/runs/<key>/``: ``environment/`` (the environment folder as the run
left it: outputs, meta, log, output store) and ``entry.json`` (the result's fields). Entries are
filled in a temporary folder and renamed into place, so a reader never sees half of one and two
runs filling the same key keep one complete entry. Files are hard-linked (copied across file
systems); links are recreated as links, never followed; FIFOs, sockets and devices are skipped.
Only results with status ``ok`` are stored. A damaged entry is a miss with a warning; a cache
folder that cannot be written leaves the run uncached with one warning.

Per-file content hashes are kept in ``file-hashes.json`` by (path, size, mtime, ctime, inode,
device), so a run over gigabytes of unchanged fixtures reads none of them again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import platform
import secrets
import shutil
import stat
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from reprocheck import __version__
from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.engine import ContainerSpec, Mount
from reprocheck.errors import UnsafeFileError
from reprocheck.images import EnvironmentImage
from reprocheck.plan import Plan
from reprocheck.run_model import META_FILE_BYTES, EnvironmentResult, FixtureResult
from reprocheck.safe_files import open_regular, read_json_object
from reprocheck.store import remembered_paths, write_bytes_atomic

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_DIR = ".cache"  # under the reports folder (hidden from containers with it)
RUNS_DIR = "runs"
HASHES_FILE = "file-hashes.json"
ENTRY_FILE = "entry.json"
ENTRY_TREE = "environment"
SHORT_KEY = 12  # characters of a key shown to users
# Not part of what a pipeline computes with: version control and tool caches.
IGNORED_NAMES = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".ruff_cache",
                           ".pytest_cache", ".hypothesis", ".tox", ".nox"})  # fmt: skip
# A file changed this recently may change again within its timestamp's resolution without
# its size or times showing it: its hash is not remembered (git's "racily clean" problem).
RACY_SECONDS = 2.0
STALE_SECONDS = 3600.0  # a temporary folder this old was left by a run that died
DEFAULT_PRUNE_DAYS = 30.0
_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "stepping", "CPU implementer",
               "CPU architecture", "CPU variant", "CPU part", "CPU revision")  # fmt: skip
_SPEC_UNKEYED = frozenset({"mounts", "labels", "masked"})  # keyed by content, or not inputs
_TEMP_PREFIX = ".tmp-"
ENTRY_BYTES = 256 << 20  # entry.json, written by a run (its fixtures listed: a plan's size)
REPORT_FILES_FILE = "report-files.json"  # report files runs were asked to write
_TRASH_PREFIX = ".trash-"


def json_digest(*parts: object) -> str:
    """The sha256 of ``parts`` as canonical JSON (sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def files_digest(paths: Iterable[Path], hashes: FileHashes | None = None) -> str:
    """A digest of the files ``paths`` by name and content, as :func:`tree_digest` sees
    each (a link by its target, never followed)."""
    hashes = hashes or FileHashes(None)
    return json_digest([[os.fsdecode(p.name), *_describe(p, p.lstat(), hashes)]
                        for p in sorted(paths)])  # fmt: skip


# --------------------------------------------------------------------------- file hashes


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(info: os.stat_result) -> list[int]:
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


class FileHashes:
    """Content hashes of files remembered by their stat stamp, in a JSON file (or only in
    memory when ``path`` is None). Thread-safe; concurrent processes each replace the file
    atomically, so the worst a race costs is hashing a file again."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._known: dict[str, list[Any]] | None = None
        self._added: dict[str, list[Any]] = {}

    def digest(self, path: Path, info: os.stat_result) -> str:
        """The sha256 of the regular file ``path`` whose lstat is ``info``; an unreadable file
        is named by its stamp (a container running as this user cannot read it either)."""
        name, stamp = os.fsdecode(path), _stamp(info)
        with self._lock:
            entry = self._added.get(name) or self._load().get(name)
        if entry is not None and entry[:-1] == stamp:
            return str(entry[-1])
        try:
            value = _sha256_file(path)
        except (OSError, UnsafeFileError):
            return f"unreadable:{stamp[0]}:{stamp[1]}"
        if time.time() - max(info.st_mtime, info.st_ctime) > RACY_SECONDS:
            with self._lock:
                self._added[name] = [*stamp, value]
        return value

    def save(self) -> None:
        """Write what was hashed since the last save, merged with the file as it is now."""
        with self._lock:
            if self._path is None or not self._added:
                return
            merged = {**_read_hashes(self._path), **self._added}
            try:
                write_bytes_atomic(self._path, json.dumps({"version": 1, "files": merged}).encode())
            except OSError as exc:  # a folder in its place, a full disk: hashed again next run
                logger.warning("cannot remember file hashes in %s (%s): 'reprocheck cache "
                               "prune' repairs it", self._path, exc.strerror or exc)  # fmt: skip
                self._path = None
                return
            self._known = merged
            self._added = {}

    def prune(self) -> int:
        """Forget files that are gone or changed; how many were forgotten."""
        if self._path is None:
            return 0
        known = _read_hashes(self._path)
        kept = {name: entry for name, entry in known.items() if _still(name, entry)}
        if len(kept) != len(known):
            write_bytes_atomic(self._path, json.dumps({"version": 1, "files": kept}).encode())
        return len(known) - len(kept)

    def _load(self) -> dict[str, list[Any]]:
        if self._known is None:
            self._known = _read_hashes(self._path) if self._path else {}
        return self._known


def _read_hashes(path: Path) -> dict[str, list[Any]]:
    """The remembered hashes; a missing or damaged file is an empty memory."""
    try:
        data = read_json_object(path)
    except (UnsafeFileError, OSError):  # a folder in its place too: prune repairs it
        return {}
    files = data.get("files") if data.get("version") == 1 else None
    if not isinstance(files, dict):
        return {}
    return {name: entry for name, entry in files.items() if _hash_entry(entry)}


def _hash_entry(entry: object) -> bool:
    """``[size, mtime_ns, ctime_ns, inode, device, sha256]``"""
    if not (isinstance(entry, list) and len(entry) == 6 and isinstance(entry[-1], str)):
        return False
    return all(isinstance(n, int) and not isinstance(n, bool) for n in entry[:-1])


def _still(name: str, entry: list[Any]) -> bool:
    try:
        return _stamp(Path(name).lstat()) == entry[:-1]
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- trees


def _entries(
    root: Path, excluded: frozenset[Path] = frozenset(), ignored: frozenset[str] = frozenset(),
    *, strict: bool = True,
) -> Iterator[tuple[Path, os.stat_result]]:  # fmt: skip
    """Every entry under ``root`` (lstat, never following links) but ``excluded`` paths and
    ``ignored`` names, iteratively: a folder may nest deeper than Python's recursion limit.
    Not ``strict``: a folder that cannot be listed is passed over (a container running as
    this user cannot list it either)."""
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as listing:
                items = list(listing)
        except PermissionError:
            if strict:
                raise
            continue
        for item in items:
            path = Path(item.path)
            if item.name in ignored or path in excluded:
                continue
            info = item.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                stack.append(path)
            yield path, info


def _describe(path: Path, info: os.stat_result, hashes: FileHashes) -> list[Any]:
    """What a container sees of one entry: its kind, permission bits and content (a link's
    target as text: the container resolves it in its own file system)."""
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISREG(info.st_mode):
        return ["file", mode, hashes.digest(path, info)]
    if stat.S_ISDIR(info.st_mode):
        return ["dir", mode]
    if stat.S_ISLNK(info.st_mode):
        return ["link", os.fsdecode(path.readlink())]
    return ["special", stat.S_IFMT(info.st_mode)]


def tree_digest(root: Path, hashes: FileHashes, excluded: frozenset[Path] = frozenset()) -> str:
    """A digest of everything under ``root`` (a folder or a single file) but ``excluded``."""
    try:
        info = root.lstat()
    except FileNotFoundError:
        return json_digest("missing")
    if not stat.S_ISDIR(info.st_mode):
        return json_digest(_describe(root, info, hashes))
    found = [
        [os.fsdecode(path.relative_to(root)), *_describe(path, entry, hashes)]
        for path, entry in _entries(root, excluded, IGNORED_NAMES, strict=False)
    ]
    return json_digest(sorted(found, key=lambda item: str(item[0])))


def tree_listing(root: Path) -> str:
    """Names, kinds, sizes and modification times under ``root`` (no byte read): what an
    entry held when it was stored, to tell a complete, unchanged copy of it."""
    listing = _Listing()
    prefix = len(str(root)) + 1
    for path, info in _entries(root):
        listing.add(str(path)[prefix:], path, info)
    return listing.digest()


class _Listing:
    """:func:`tree_listing`, built one entry at a time."""

    def __init__(self) -> None:
        self._found: list[list[Any]] = []

    def add(self, rel: str, path: Path, info: os.stat_result) -> None:
        if stat.S_ISREG(info.st_mode):
            self._found.append([rel, "file", info.st_size, info.st_mtime_ns])
        elif stat.S_ISLNK(info.st_mode):
            self._found.append([rel, "link", os.fsdecode(path.readlink())])
        elif stat.S_ISDIR(info.st_mode):
            self._found.append([rel, "dir"])

    def digest(self) -> str:
        return json_digest(sorted(self._found, key=lambda item: str(item[0])))


def copy_tree(source: Path, target: Path) -> str:
    """Copy the folder ``source`` to the new folder ``target``: regular files hard-linked (or
    copied when linking fails, say across file systems), links recreated as links and never
    followed, FIFOs, sockets and devices skipped; permission bits kept. Returns the copy's
    :func:`tree_listing`, taken from what was copied in the same pass (a hard link is the
    same file; a copy keeps size and modification time)."""
    target.mkdir()
    modes = [(target, stat.S_IMODE(source.stat().st_mode))]
    listing = _Listing()
    prefix = len(str(source)) + 1  # entries are source/<rel>: sliced, not relative_to
    for path, info in _entries(source):
        rel = str(path)[prefix:]
        to = target / rel
        if stat.S_ISDIR(info.st_mode):
            to.mkdir()
            modes.append((to, stat.S_IMODE(info.st_mode)))
        elif stat.S_ISLNK(info.st_mode):
            to.symlink_to(path.readlink())
        elif stat.S_ISREG(info.st_mode):
            _link_or_copy(path, to)
        listing.add(rel, path, info)
    for folder, mode in reversed(modes):  # last: a read-only folder must be filled first
        folder.chmod(mode)
    return listing.digest()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # another file system, too many links, not allowed: a copy
        shutil.copy2(source, target, follow_symlinks=False)


def _remove(folder: Path) -> None:
    """Remove ``folder`` as one step (renamed aside first), so no reader sees it half gone."""
    trash = folder.with_name(f"{_TRASH_PREFIX}{secrets.token_hex(8)}")
    try:
        folder.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- the key


@cache
def host_cpu() -> dict[str, Any]:
    """This machine's architecture, CPU models, flags and count (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    models: set[str] = set()
    flags: set[str] = set()
    for block in text.split("\n\n"):
        fields = dict(_field(line) for line in block.splitlines() if ":" in line)
        model = " | ".join(fields.get(name, "") for name in _CPU_FIELDS)
        if model.strip(" |"):
            models.add(model)
        flags.update((fields.get("flags") or fields.get("Features") or "").split())
    return {"machine": platform.machine(), "count": os.cpu_count(), "models": sorted(models),
            "flags": sorted(flags), "processor": "" if text else platform.processor()}  # fmt: skip


def _field(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key.strip(), value.strip()


def _container_inputs(spec: ContainerSpec) -> dict[str, Any]:
    """The spec's fields that change what a container computes (every field but the labels
    and the mounts, whose content is keyed instead of their host paths)."""
    fields = dataclasses.fields(spec)
    values = {f.name: getattr(spec, f.name) for f in fields if f.name not in _SPEC_UNKEYED}
    return values | {"env": dict(spec.env)}


def _host_path(spec: ContainerSpec, container_path: str) -> Path | None:
    for mount in spec.mounts:
        if container_path.startswith(mount.target.rstrip("/") + "/"):
            return mount.source / container_path[len(mount.target.rstrip("/")) + 1 :]
    return None


def _report_files(folder: Path, asked: list[Path]) -> list[Path]:
    """The report files earlier runs were asked to write (``--json report.json`` in the
    project, then ``--md summary.md``: the first is no input of the second run either), and
    ``asked``, recorded for the runs after this one. A record that cannot be read or written
    only costs those runs their hits."""
    return remembered_paths(folder / REPORT_FILES_FILE, "files", Path.exists, asked)


def _foreign_settings(source: Path) -> str | None:
    """A digest of the config file's tables that are not reprocheck's: a pyproject.toml's
    other tables (a pipeline may read its own settings there, and the container sees the
    file). reprocheck's own tables are keyed as the settings a run uses (the pipeline's),
    so changing a tolerance compares again without running again."""
    if source.name != "pyproject.toml":
        return None
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return f"unreadable: {exc}"  # the config was read at start: changed since
    tool = data.get("tool")
    if isinstance(tool, dict):
        tool.pop("reprocheck", None)
    return json_digest(data)


def _excluded(spec: ContainerSpec, mount: Mount, unkeyed: frozenset[Path]) -> frozenset[Path]:
    """What not to hash under ``mount``: paths hidden from the container, folders shown by
    other mounts (hashed there), and ``unkeyed`` files (the config, this run's reports)."""
    hidden = {host for path in spec.masked if (host := _host_path(spec, path)) is not None}
    nested = {m.source for m in spec.mounts if m.source != mount.source}
    inside = {p for p in hidden | nested | unkeyed if p.is_relative_to(mount.source)}
    return frozenset(inside - {mount.source})


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True, kw_only=True)
class _Manifest:
    seconds: float
    fixtures: tuple[FixtureResult, ...]
    listing: str


class _DamagedError(Exception):
    """A cache entry that cannot be used: a miss, with a warning."""


def _manifest_json(key: str, result: EnvironmentResult, listing: str) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION, "key": key, "reprocheck": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": result.name, "image_ref": result.image_ref, "image_id": result.image_id,
        "status": result.status, "seconds": result.seconds, "listing": listing,
        "fixtures": [[f.fixture, f.seconds] for f in result.fixtures],
    }  # fmt: skip


def _read_manifest(path: Path, key: str) -> _Manifest:
    try:
        data = read_json_object(path, limit=ENTRY_BYTES)
    except UnsafeFileError as exc:
        raise _DamagedError(exc.message) from exc
    fixtures = data.get("fixtures")
    valid = (
        data.get("version") == CACHE_VERSION and data.get("key") == key
        and data.get("status") == "ok" and isinstance(data.get("listing"), str)
        and isinstance(data.get("seconds"), int | float) and isinstance(fixtures, list)
        and all(_fixture_entry(item) for item in fixtures)
    )  # fmt: skip
    if not valid or not isinstance(fixtures, list):
        raise _DamagedError(f"{path} does not describe a result")
    return _Manifest(
        seconds=float(data["seconds"]),
        fixtures=tuple(
            FixtureResult(fixture=name, status="ok", seconds=None if s is None else float(s))
            for name, s in fixtures
        ),
        listing=data["listing"],
    )


def _fixture_entry(item: object) -> bool:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        return False
    return item[1] is None or (isinstance(item[1], int | float) and not isinstance(item[1], bool))


def _fingerprint(meta: Path) -> dict[str, Any]:
    try:
        return read_json_object(meta / "fingerprint.json", limit=META_FILE_BYTES)
    except UnsafeFileError:
        return {}


class RunCache:
    """The result cache of one project (``reports/.cache``), shared by concurrent runs.

    ``read=False`` (``--no-cache``) runs everything and stores the fresh results in place
    of the old ones; ``enabled=False`` neither reads nor writes."""

    def __init__(
        self, folder: Path, *, read: bool = True, enabled: bool = True,
        unkeyed: Iterable[Path] = (),
    ) -> None:  # fmt: skip
        self.folder = folder
        self._unkeyed = frozenset(unkeyed)
        self.runs = folder / RUNS_DIR
        self._read = read
        self._enabled = enabled
        self._hashes = FileHashes(folder / HASHES_FILE if enabled else None)
        self._lock = threading.Lock()
        self._trees: dict[tuple[Path, frozenset[Path]], str] = {}
        self._store_failed = False
        # What this run's containers came to: restored or stored under a key (each entry by
        # its key and listing: an entry replaced by --no-cache is another one), or neither
        # (not cacheable, not "ok", not stored); see :meth:`settled`.
        self._restored: set[str] = set()
        self._stored: set[str] = set()
        self._entries = self._settled = 0  # keyed entries handed out, and restored or stored
        self._unsettled = False

    @classmethod
    def open(
        cls, config: RunConfig, *, read: bool = True, reports: Iterable[Path | None] = ()
    ) -> RunCache:
        """The project's cache; one warning and a disabled cache when it cannot be written.
        ``reports`` (this run's ``--json``/``--html``/... files), those earlier runs were
        asked to write (``report-files.json``) and the config file are left out of the key
        even where the container could read them: a report written into the project by an
        earlier run would otherwise make every run a miss, and the config's settings that
        matter to a run are keyed as settings (a pyproject.toml's other tables as a digest)."""
        folder = config.reports_dir / CACHE_DIR
        try:
            (folder / RUNS_DIR).mkdir(parents=True, exist_ok=True)
            Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=folder / RUNS_DIR)).rmdir()
        except OSError as exc:
            logger.warning("the result cache %s cannot be written (%s): running without it",
                           folder, exc.strerror or exc)  # fmt: skip
            return cls(folder, enabled=False)
        asked = [path.resolve() for path in reports if path is not None]
        return cls(folder, read=read, unkeyed=[*asked, *_report_files(folder, asked)])

    def entry(self, spec: ContainerSpec, plan: Plan, repeat: int) -> CacheEntry:
        """The place of one environment run in the cache. Runs that measure noise (every run
        when ``[run] repeat`` > 1, the first one too) or have network access are not cached."""
        noise = repeat > 1 or plan.config.run.repeat > 1
        if not self._enabled or noise or spec.network != "none":
            self.unsettled()
            return CacheEntry(cache=None, key="", spec=spec, plan=plan)
        try:
            key = self.key(spec, plan)
        except Exception as exc:  # the cache is an optimisation: it never fails a run
            logger.warning("result cache: cannot compute the key (%s: %s); running without it",
                           type(exc).__name__, exc)  # fmt: skip
            self.unsettled()
            return CacheEntry(cache=None, key="", spec=spec, plan=plan)
        with self._lock:
            self._entries += 1
        return CacheEntry(cache=self, key=key, spec=spec, plan=plan)

    def unsettled(self) -> None:
        """A container of this run whose result is neither restored nor stored."""
        with self._lock:
            self._unsettled = True

    def settled(self) -> Settled | None:
        """The keys of every container result this run restored or stored; None when one
        was neither, or when nothing was cached. What decides whether a run is one already
        reported (see reprocheck.reuse)."""
        with self._lock:
            if self._unsettled or self._settled != self._entries or not self._entries:
                return None
            return Settled(entries=tuple(sorted(self._restored | self._stored)),
                           all_restored=not self._stored)  # fmt: skip

    @property
    def hashes(self) -> FileHashes:
        """The project's remembered file hashes (a remote engine's data plane uses them)."""
        return self._hashes

    def key(self, spec: ContainerSpec, plan: Plan, *, fresh: bool = False) -> str:
        """The key of a run of ``spec`` over ``plan``; ``fresh`` hashes the trees again
        (else each mount's tree is hashed once per cache object)."""
        config = plan.config
        unkeyed = self._unkeyed | {config.source}
        mounts = [[m.target, self._tree(m.source, _excluded(spec, m, unkeyed), fresh)]
                  for m in sorted(spec.mounts, key=lambda m: m.target) if m.read_only]  # fmt: skip
        self._hashes.save()
        # What is masked is left out of the mounts' trees; which folders are masked is not
        # keyed: a baselines/ folder made by 'baseline save' changes nothing a pipeline sees.
        return json_digest({
            "cache": CACHE_VERSION, "reprocheck": __version__, "host": host_cpu(),
            "container": _container_inputs(spec), "mounts": mounts,
            "config": _foreign_settings(config.source),
            "pipeline": config.pipeline.model_dump(mode="json"), "fixtures": list(plan.fixtures),
        })  # fmt: skip

    def _tree(self, root: Path, excluded: frozenset[Path], fresh: bool) -> str:
        with self._lock:
            if fresh or (root, excluded) not in self._trees:
                self._trees[root, excluded] = tree_digest(root, self._hashes, excluded)
            return self._trees[root, excluded]

    def restore(self, key: str, folder: Path, plan: Plan) -> _Manifest | None:
        """Put entry ``key``'s environment folder in place of ``folder``; the entry's
        manifest, or None on a miss (a damaged entry is removed, with a warning)."""
        entry = self.runs / key
        if not (self._enabled and self._read and entry.is_dir()):
            return None
        staging = folder.with_name(f".{folder.name}.cached-{secrets.token_hex(4)}")
        try:
            manifest = _read_manifest(entry / ENTRY_FILE, key)
            _expect_fixtures(manifest, plan)
            if copy_tree(entry / ENTRY_TREE, staging) != manifest.listing:
                raise _DamagedError("its files changed after it was stored")
        except (_DamagedError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if not entry.is_dir():  # removed meanwhile (pruned, replaced): a plain miss
                return None
            if not (isinstance(exc, _DamagedError) or _within(exc, entry)):
                raise  # this side failed (the run folder): the entry may be sound
            logger.warning("result cache: entry %s is damaged (%s): running again",
                           key[:SHORT_KEY], exc)  # fmt: skip
            _remove(entry)
            return None
        _swap(staging, folder)
        with contextlib.suppress(OSError):
            os.utime(entry)  # last used, for prune
        with self._lock:
            self._restored.add(f"{key}:{manifest.listing}")
            self._settled += 1
        return manifest

    def store(self, entry: CacheEntry, folder: Path, result: EnvironmentResult) -> None:
        """Store ``folder`` (an environment's outputs, meta, log and output store) under the
        entry's key, unless what the key covers changed while the container ran."""
        if self._store_failed:
            self.unsettled()
            return
        if entry.key != self.key(entry.spec, entry.plan, fresh=True):
            logger.warning("result cache: files changed while %s ran: its result is not cached",
                           result.name)  # fmt: skip
            self.unsettled()
            return
        staging = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{entry.key[:SHORT_KEY]}-",
                                        dir=self.runs))  # fmt: skip
        try:
            listing = copy_tree(folder, staging / ENTRY_TREE)
            manifest = _manifest_json(entry.key, result, listing)
            (staging / ENTRY_FILE).write_text(json.dumps(manifest, indent=1))
            _publish(staging, self.runs / entry.key, replace=not self._read)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with self._lock:
            self._stored.add(f"{entry.key}:{manifest['listing']}")
            self._settled += 1

    def failed_store(self, environment: str, exc: BaseException) -> None:
        """A result that could not be stored: a warning. When the cache folder itself failed
        (full, read-only) it is the only one: nothing more is stored in this run."""
        ours = _within(exc, self.folder) or (
            isinstance(exc, OSError) and exc.errno in _CACHE_DISK_ERRORS
        )
        self.unsettled()
        with self._lock:
            if self._store_failed:
                return
            self._store_failed = ours
        rest = "; not caching the rest of this run" if ours else ""
        logger.warning("result cache: cannot store the result of %s (%s: %s)%s", environment,
                       type(exc).__name__, exc, rest)  # fmt: skip


def _within(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` is an OSError about a path inside ``folder`` (either of its two: a copy
    names the file read first, the file written second)."""
    if not isinstance(exc, OSError):
        return False
    names = (exc.filename, exc.filename2)
    return any(isinstance(name, str | bytes) and Path(os.fsdecode(name)).is_relative_to(folder)
               for name in names)  # fmt: skip


# A store that fails with these failed on the cache's own disk, whatever file it names (a
# write that fails names none): the disk is full or read-only for every later store too.
_CACHE_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def _expect_fixtures(manifest: _Manifest, plan: Plan) -> None:
    planned = list(plan.fixtures) if plan.config.pipeline.callable else []
    if [f.fixture for f in manifest.fixtures] != planned:
        raise _DamagedError("its fixtures are not the planned ones")


def _swap(staging: Path, folder: Path) -> None:
    """Replace ``folder`` by ``staging``; ``folder`` is kept as it was if that fails."""
    aside = folder.with_name(f".{folder.name}.old-{secrets.token_hex(4)}")
    moved = folder.exists()
    if moved:
        folder.rename(aside)
    try:
        staging.rename(folder)
    except OSError:
        if moved:
            aside.rename(folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _publish(staging: Path, final: Path, *, replace: bool) -> None:
    """Rename the filled ``staging`` folder to ``final`` (atomic). When another run stored the
    same key first, its entry is kept (it is as good), unless ``replace``."""
    if replace or (final.is_symlink() or (final.exists() and not final.is_dir())):
        _remove(final)  # a file or link with the entry's name is no entry: replaced
    try:
        staging.rename(final)
    except OSError:
        if not final.is_dir():
            raise


@dataclass(frozen=True, kw_only=True)
class Settled:
    """A run's container results, all of them restored from or stored in the cache: each
    entry as ``KEY:LISTING`` (its key, and the digest of what it holds), sorted."""

    entries: tuple[str, ...]
    all_restored: bool  # no container ran: every result came from the cache


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """One environment run's place in the cache (``cache`` None: not cached)."""

    cache: RunCache | None
    key: str
    spec: ContainerSpec
    plan: Plan

    @property
    def short_key(self) -> str:
        return self.key[:SHORT_KEY]

    def restore(
        self, env: EnvironmentConfig, image: EnvironmentImage, folder: Path, repeat: int
    ) -> EnvironmentResult | None:
        """The cached result, its files put in ``folder``; None on a miss."""
        if self.cache is None:
            return None
        try:
            manifest = self.cache.restore(self.key, folder, self.plan)
        except Exception as exc:  # the cache is an optimisation: it never fails a run
            logger.warning("result cache: cannot restore %s (%s: %s): running again",
                           self.short_key, type(exc).__name__, exc)  # fmt: skip
            return None
        if manifest is None:
            return None
        meta = folder / "meta"
        return EnvironmentResult(
            name=env.name, image=env.image, image_ref=image.ref, image_id=image.image_id,
            status="ok", error=None, outputs_dir=folder / "outputs", meta_dir=meta,
            fingerprint=_fingerprint(meta), fixtures=manifest.fixtures,
            seconds=manifest.seconds, repeat=repeat, image_digest=image.digest,
        )  # fmt: skip

    def store(self, folder: Path, result: EnvironmentResult) -> None:
        """Keep a successful result for later runs (others are not cached)."""
        if self.cache is None:
            return
        if result.status != "ok":
            self.cache.unsettled()
            return
        try:
            self.cache.store(self, folder, result)
        except Exception as exc:  # the cache is an optimisation: it never fails a run
            self.cache.failed_store(result.name, exc)


NO_CACHE = RunCache(Path(os.devnull), enabled=False)


# --------------------------------------------------------------------------- prune


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    removed: int  # entries
    damaged: int  # of them, unreadable
    image_gone: int  # of them, whose image no longer exists
    kept: int
    freed_bytes: int  # files not linked from anywhere else (stored runs share the others)
    failed: tuple[str, ...] = ()  # what could not be removed (a read-only folder): why


def prune(
    folder: Path, *, everything: bool = False, older_than_days: float = DEFAULT_PRUNE_DAYS,
    image_exists: Callable[[str], bool] | None = None,
) -> PruneResult:  # fmt: skip
    """Remove entries not used for ``older_than_days`` (every one with ``everything``),
    damaged ones, those whose image is gone (when ``image_exists`` can tell), temporary
    folders left by runs that died, and remembered hashes of files that changed."""
    runs = folder / RUNS_DIR
    limit = time.time() - older_than_days * 86400
    reasons: list[str] = []
    failed: list[str] = []
    freed = kept = 0
    for path in sorted(runs.iterdir()) if runs.is_dir() else []:
        reason = _prune_reason(path, limit if not everything else math.inf, image_exists)
        if reason is None:
            kept += 1
            continue
        size = _unshared_bytes(path)
        try:
            _remove(path)
        except OSError as exc:  # a read-only cache folder: left, said once by the caller
            failed.append(f"{path.name}: {exc.strerror or exc}")
            kept += 1
            continue
        freed += size
        if not path.name.startswith("."):
            reasons.append(reason)
    hashes = folder / HASHES_FILE
    try:
        if everything or (hashes.exists() and not hashes.is_file()):
            _remove_file_or_folder(hashes)  # a folder or FIFO in its place: repaired
        else:
            FileHashes(hashes).prune()
    except OSError as exc:
        failed.append(f"{HASHES_FILE}: {exc.strerror or exc}")
    return PruneResult(removed=len(reasons), damaged=reasons.count("damaged"),
                       image_gone=reasons.count("image_gone"), kept=kept,
                       freed_bytes=freed, failed=tuple(failed))  # fmt: skip


def _remove_file_or_folder(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _remove(path)
    else:
        path.unlink(missing_ok=True)


def _prune_reason(
    path: Path, limit: float, image_exists: Callable[[str], bool] | None
) -> str | None:
    """Why ``path`` goes ("unused", "damaged", "image_gone"), or None to keep it."""
    try:
        used = path.lstat().st_mtime
    except OSError:
        return None
    if path.name.startswith("."):  # a temporary folder: in use unless a run died with it
        return "unused" if used < time.time() - STALE_SECONDS else None
    if used < limit:
        return "unused"
    try:
        manifest = read_json_object(path / ENTRY_FILE, limit=ENTRY_BYTES)
    except UnsafeFileError:
        return "damaged"
    image = manifest.get("image_id")
    if image_exists is not None and isinstance(image, str) and not image_exists(image):
        return "image_gone"
    return None


def _unshared_bytes(path: Path) -> int:
    """Bytes that removing ``path`` frees: regular files with no other hard link."""
    if not path.is_dir() or path.is_symlink():
        return 0
    return sum(info.st_size for _path, info in _entries(path, strict=False)
               if stat.S_ISREG(info.st_mode) and info.st_nlink == 1)  # fmt: skip
