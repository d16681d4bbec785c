"""The data plane of an engine on another machine: no host path is mounted there.

A :class:`~reprocheck.engine.base.ContainerSpec` names host folders as mounts. On a remote
engine (ssh://, tcp://, a context) each read-only mount becomes a volume named by the
sha256 of its content, filled once through the engine API (``put_archive``) and reused by
every later run while nothing in it changed; single files (the CA bundle, qemu) share one
volume per parent folder. Each writable mount becomes a fresh volume, opened to the
container's user, seeded with the host folder's files (``spec.json``) and copied back
(``get_archive``) after the run. Hashes are checked on both ends: a new input volume is
read back by a short container that hashes every file and must list what the host hashed;
the harness hashes what it leaves in the writable mounts (``TRANSFER_MANIFEST_ENV``) and the
host checks the copies it received against that list.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from reprocheck.cache import IGNORED_NAMES, FileHashes, json_digest
from reprocheck.engine.base import LABEL, ContainerSpec, Mount
from reprocheck.errors import EngineError

VOLUME_LABEL = "io.reprocheck.volume"  # "input" (content-addressed) or "output" (one run)
TRANSFER_MANIFEST_ENV = "REPROCHECK_TRANSFER_MANIFEST"  # the harness hashes its outputs there
TRANSFER_ROOTS_ENV = "REPROCHECK_TRANSFER_ROOTS"  # ":"-separated folders it hashes
MANIFEST_NAME = ".transfer-sha256.json"
MANIFEST_LIMIT = 64 << 20  # bytes (about 500,000 files): a bigger one is not read
_READY_SUFFIX = "-ok"  # a second, empty volume: the input volume is complete and verified
# Links that leave their volume (``../shared/data`` in /project): Docker refuses them in an
# archive put at the volume, so the helper makes them, from a list put in its own "/".
_LINKS = "/.reprocheck-links.json"
_VERIFY = (
    "import hashlib,json,os,sys\n"
    f"if os.path.exists({_LINKS!r}):\n"
    f" for p,t in json.load(open({_LINKS!r})):os.symlink(t,p)\n"
    "out={}\n"
    "for root in sys.argv[1:]:\n"
    " for d,_s,fs in os.walk(root):\n"
    "  for f in fs:\n"
    "   p=os.path.join(d,f)\n"
    "   if os.path.isfile(p) and not os.path.islink(p):\n"
    "    h=hashlib.sha256()\n"
    "    with open(p,'rb') as fh:\n"
    "     for c in iter(lambda:fh.read(1<<20),b''):h.update(c)\n"
    "    out[p]=h.hexdigest()\n"
    "print(json.dumps(out))\n"
)


@dataclass(frozen=True, kw_only=True)
class _Input:
    """One content-addressed volume: host entries shown under ``target``."""

    target: str  # container folder the volume is mounted at
    entries: tuple[tuple[str, Path], ...]  # (path relative to target, host path), sorted
    files: dict[str, str]  # container path -> sha256 of every regular file
    digest: str

    @property
    def volume(self) -> str:
        return f"reprocheck-in-{self.digest[:40]}"

    @property
    def size(self) -> int:
        return sum(p.lstat().st_size for _rel, p in self.entries if p.is_file())


@dataclass(frozen=True, kw_only=True)
class _Output:
    mount: Mount
    volume: str


@dataclass(kw_only=True)
class Transfer:
    """What one container run got: its volumes and the figures of the copies."""

    volumes: list[str] = field(default_factory=list)  # NAME:TARGET:MODE, for containers.create
    env: dict[str, str] = field(default_factory=dict)
    outputs: list[_Output] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


class VolumePlane:
    """Inputs into content-addressed volumes, outputs back out, over one docker client."""

    def __init__(self, client: Any, hashes: FileHashes | None = None) -> None:
        self._client = client
        self._hashes = hashes or FileHashes(None)
        self._lock = threading.Lock()
        self._filling: dict[str, threading.Lock] = {}  # one filler per input volume

    @contextmanager
    def prepared(self, spec: ContainerSpec) -> Iterator[Transfer]:
        """Volumes for ``spec``'s mounts, ready to mount; output volumes removed afterwards."""
        started = time.monotonic()
        inputs = [self._input(target, entries, spec) for target, entries in _groups(spec)]
        hashed = time.monotonic()
        tag = uuid.uuid4().hex[:12]
        outputs = [_Output(mount=m, volume=f"reprocheck-out-{tag}-{i}")
                   for i, m in enumerate(m for m in spec.mounts if not m.read_only)]  # fmt: skip
        transfer = Transfer(outputs=outputs)
        try:
            with ExitStack() as held:  # shards of one environment fill a volume once
                for item in inputs:
                    held.enter_context(self._filler(item.volume))
                present = self._volumes() if inputs else set()
                missing = [i for i in inputs
                           if not {i.volume, i.volume + _READY_SUFFIX} <= present]  # fmt: skip
                for volume in [i.volume for i in missing] + [o.volume for o in outputs]:
                    kind = "output" if volume.startswith("reprocheck-out-") else "input"
                    self._client.volumes.create(volume, labels={LABEL: "1", VOLUME_LABEL: kind})
                self._fill(spec, missing, outputs)
            filled = time.monotonic()
            transfer.figures = {
                "inputs_reused": len(inputs) - len(missing),
                "inputs_copied": len(missing),
                "bytes_copied": sum(i.size for i in missing),
                "hash_seconds": round(hashed - started, 3),
                "copy_in_seconds": round(filled - hashed, 3),
            }
            # a list, not a dict by volume: two mounts of the same content are one volume
            transfer.volumes = [f"{i.volume}:{i.target}:ro" for i in inputs]
            transfer.volumes += [f"{o.volume}:{o.mount.target}:rw" for o in outputs]
            if outputs:
                roots = ":".join(o.mount.target for o in outputs)
                manifest = posixpath.join(outputs[-1].mount.target, MANIFEST_NAME)
                transfer.env = {TRANSFER_MANIFEST_ENV: manifest, TRANSFER_ROOTS_ENV: roots}
            yield transfer
        finally:
            for out in outputs:
                self._remove_volume(out.volume)

    def _filler(self, volume: str) -> threading.Lock:
        with self._lock:
            return self._filling.setdefault(volume, threading.Lock())

    def collect(self, container: Any, transfer: Transfer) -> None:
        """Copy each writable mount's content back into its host folder and check it
        against the harness's hashes (when it wrote them)."""
        started = time.monotonic()
        received: dict[str, str] = {}
        for out in transfer.outputs:
            received |= _extract(container, out.mount)
        manifest = transfer.env.get(TRANSFER_MANIFEST_ENV)
        expected = _manifest(transfer.outputs, manifest) if manifest else None
        if expected is not None:
            wrong = sorted(p for p, digest in expected.items() if received.get(p) != digest)
            if wrong:
                how = "differs" if wrong[0] in received else "did not arrive"
                raise EngineError(
                    f"{len(wrong)} output file(s) differ after the copy from the engine "
                    f"(first: {wrong[0]!r}, which {how})",
                    fix="run again; if it repeats, check the connection to that host",
                )
        transfer.figures |= {
            "copy_out_seconds": round(time.monotonic() - started, 3),
            "files_out": len(received),
            "verified_out": expected is not None,
        }

    # ------------------------------------------------------------------ inputs

    def _input(self, target: str, entries: list[tuple[str, Path]], spec: ContainerSpec) -> _Input:
        hidden = {PurePosixPath(m) for m in spec.masked}
        listed: list[tuple[str, Path]] = []
        files: dict[str, str] = {}
        described: list[list[Any]] = []
        for rel, host in entries:
            for sub, path, info in _walk(host, PurePosixPath(target) / rel, hidden):
                name = posixpath.join(rel, sub) if sub else rel
                listed.append((name, path))
                where = posixpath.join(target, name)
                if stat.S_ISREG(info.st_mode):
                    digest = self._hashes.digest(path, info)
                    files[where] = digest
                    described.append([name, "file", stat.S_IMODE(info.st_mode), digest])
                elif stat.S_ISLNK(info.st_mode):
                    described.append([name, "link", os.fsdecode(path.readlink())])
                else:
                    described.append([name, "dir", stat.S_IMODE(info.st_mode)])
        digest = json_digest(target, sorted(described, key=lambda item: str(item[0])))
        return _Input(target=target, entries=tuple(listed), files=files, digest=digest)

    def _volumes(self) -> set[str]:
        """Names of this data plane's volumes on the engine (one call). An input counts as
        there only with its readiness marker *and* itself: mounting a name that is gone
        would make the engine create it empty, and the pipeline would see no files."""
        found = self._client.api.volumes(filters={"label": VOLUME_LABEL})
        return {str(v.get("Name")) for v in (found or {}).get("Volumes") or ()}

    def _fill(self, spec: ContainerSpec, missing: list[_Input], outputs: list[_Output]) -> None:
        """One helper container (root, no network) with the new volumes mounted: the files
        go in through ``put_archive``; new inputs are then hashed inside it."""
        if not missing and not outputs:
            return
        volumes = {i.volume: {"bind": i.target, "mode": "rw"} for i in missing}
        volumes |= {o.volume: {"bind": o.mount.target, "mode": "rw"} for o in outputs}
        command = [spec.command[0], "-c", _VERIFY, *(i.target for i in missing)]
        helper = self._client.containers.create(
            spec.image, command=command if missing else ["true"], user="0:0",
            network_mode="none", volumes=volumes, labels={LABEL: "1", **spec.labels},
            platform=spec.platform, detach=True,
        )  # fmt: skip
        try:
            # Docker takes a volume's folder mode from an archive put at "/" that names the
            # folder (it skips "." of a put at the folder); Podman 4.3 writes into a volume only
            # through a put at its mount point. So: the folders from "/", then each volume's
            # content at its own mount point.
            puts = [("/", [_folder(i.target, i.entries) for i in missing]
                     + [_folder(o.mount.target, None) for o in outputs])]  # fmt: skip
            links = [link for i in missing for link in _leaving(i)]
            if links:
                listing = json.dumps(links).encode()
                member = tarfile.TarInfo(_LINKS.lstrip("/"))
                member.size, member.mode = len(listing), 0o444
                puts[0][1].append((member, listing))
            puts += [(i.target, list(_input_members(i))) for i in missing]
            puts += [(o.mount.target, list(_output_members(o))) for o in outputs]
            for path, members in puts:
                _put(helper, path, members, spec.image)
            if missing:
                self._verify(helper, missing)
        finally:
            helper.remove(force=True)
        for item in missing:
            self._client.volumes.create(item.volume + _READY_SUFFIX,
                                        labels={LABEL: "1", VOLUME_LABEL: "ready"})  # fmt: skip

    def _verify(self, helper: Any, missing: list[_Input]) -> None:
        helper.start()
        status = helper.wait(timeout=3600)
        text = helper.logs(stdout=True, stderr=False).decode("utf-8", "replace").strip()
        try:
            seen = json.loads(text.splitlines()[-1]) if text else None
        except ValueError:
            seen = None
        if status.get("StatusCode") != 0 or not isinstance(seen, dict):
            err = helper.logs(stdout=False, stderr=True).decode("utf-8", "replace").strip()
            raise EngineError(f"could not check the copied files: {err[-300:] or text[-300:]}")
        for item in missing:
            for path, digest in item.files.items():
                if seen.get(path) != digest:
                    self._remove_volume(item.volume)
                    raise EngineError(
                        f"{path!r} arrived with another sha256 than it left with",
                        fix="run again; if it repeats, check the connection to that host",
                    )

    def _remove_volume(self, name: str) -> None:
        try:
            self._client.volumes.get(name).remove(force=True)
        except Exception:  # gone already; a later sweep removes what is left
            return


# ---------------------------------------------------------------------- helpers


def _groups(spec: ContainerSpec) -> list[tuple[str, list[tuple[str, Path]]]]:
    """Read-only mounts as (volume target, [(path under it, host path)]): a folder is a
    volume of its own; files share one volume per parent folder."""
    groups: dict[str, list[tuple[str, Path]]] = {}
    for mount in spec.mounts:
        if not mount.read_only:
            continue
        source = mount.source.resolve()  # as a bind mount: what a link there names
        if source.is_dir():
            groups.setdefault(mount.target, []).append(("", source))
        else:
            parent, name = posixpath.split(mount.target)
            groups.setdefault(parent, []).append((name, source))
    return sorted(groups.items())


def _walk(
    host: Path, where: PurePosixPath, hidden: set[PurePosixPath]
) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(path under ``host``, host path, lstat) of ``host`` and everything in it, links not
    followed; folders the container sees masked (stored runs, baselines) stay empty."""
    info = host.lstat()
    yield "", host, info
    if not stat.S_ISDIR(info.st_mode) or where in hidden:
        return
    stack = [(host, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as listing:
            items = sorted(listing, key=lambda item: item.name)
        for item in items:
            if item.name in IGNORED_NAMES:
                continue
            rel = posixpath.join(prefix, item.name)
            path = Path(item.path)
            entry = item.stat(follow_symlinks=False)
            if stat.S_ISDIR(entry.st_mode) or stat.S_ISREG(entry.st_mode) or \
                    stat.S_ISLNK(entry.st_mode):  # fmt: skip
                yield rel, path, entry
            if stat.S_ISDIR(entry.st_mode) and where / rel not in hidden:
                stack.append((path, rel))


def _member(name: str, info: os.stat_result, path: Path) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.uid = member.gid = 0
    member.mtime = int(info.st_mtime)
    if stat.S_ISDIR(info.st_mode):
        member.type, member.mode = tarfile.DIRTYPE, stat.S_IMODE(info.st_mode) | 0o555
    elif stat.S_ISLNK(info.st_mode):
        member.type, member.linkname = tarfile.SYMTYPE, os.fsdecode(path.readlink())
    else:
        member.size, member.mode = info.st_size, stat.S_IMODE(info.st_mode) | 0o444
    return member


_Entry = tuple[tarfile.TarInfo, Path | bytes | None]  # an archive entry, its data or file


def _put(helper: Any, path: str, members: list[_Entry], image: str) -> None:
    with tempfile.TemporaryFile(prefix="reprocheck-put-") as tar_file:
        _write_archive(tar_file, members)
        tar_file.seek(0)
        if not helper.put_archive(path, tar_file):
            raise EngineError(f"the engine refused the files for {image} (at {path})")


def _write_archive(tar_file: IO[bytes], members: list[_Entry]) -> None:
    """``members`` as a tar archive that ends with its two end-of-archive blocks: Python pads
    an archive to a 10 KiB record, and Podman's copier stops reading at those blocks, so
    writing the padding could fail the upload ("passing bulk input to subprocess: write |1:
    broken pipe", containers/buildah#6573; seen in this project's CI)."""
    with tarfile.open(fileobj=tar_file, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, source in members:
            if source is None or isinstance(source, bytes):
                tar.addfile(member, None if source is None else io.BytesIO(source))
                continue
            with source.open("rb") as data:
                tar.addfile(member, data)
        end = tar.offset + 2 * tarfile.BLOCKSIZE
    tar_file.truncate(end)


def _folder(target: str, entries: tuple[tuple[str, Path], ...] | None) -> _Entry:
    """A volume's folder named from "/": an input's with its host folder's mode (0755 for
    single files), an output's (``entries`` None) opened to the container's user."""
    name = target.strip("/")
    source = next((path for rel, path in entries or () if not rel), None)
    if source is not None:
        return _member(name, source.lstat(), source), None
    folder = tarfile.TarInfo(name)
    folder.type, folder.mode = tarfile.DIRTYPE, 0o755 if entries is not None else 0o777
    return folder, None


def _input_members(item: _Input) -> Iterator[_Entry]:
    """An input volume's content, named from its mount point ("." is the folder itself)."""
    yield _folder(".", item.entries)
    for rel, path in item.entries:
        if rel:
            member = _member(rel, path.lstat(), path)
            if not (member.issym() and _leaves(item.target, rel, member.linkname)):
                yield member, path if member.isfile() else None


def _leaves(target: str, rel: str, linkname: str) -> bool:
    """Whether a relative link at ``rel`` in the volume at ``target`` names a path outside
    it (as Docker checks it: by the names alone)."""
    if posixpath.isabs(linkname):
        return False
    root = target.rstrip("/")
    named = posixpath.normpath(posixpath.join(root, posixpath.dirname(rel), linkname))
    return not (named == root or named.startswith(root + "/"))


def _leaving(item: _Input) -> list[tuple[str, str]]:
    """(container path, target) of the input's links that leave its volume."""
    found = []
    for rel, path in item.entries:
        if rel and path.is_symlink():
            linkname = os.fsdecode(path.readlink())
            if _leaves(item.target, rel, linkname):
                found.append((posixpath.join(item.target, rel), linkname))
    return found


def _output_members(out: _Output) -> Iterator[_Entry]:
    """An output volume, opened to the container's user and seeded with the host folder's
    files (``spec.json``)."""
    yield _folder(".", None)
    for path in sorted(out.mount.source.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(out.mount.source).as_posix()
            yield _member(rel, path.lstat(), path), path


def _extract(container: Any, mount: Mount) -> dict[str, str]:
    """The writable mount's files copied into its host folder (links kept as links, never
    followed; nothing outside the folder; FIFOs and devices left behind); container path ->
    sha256 of what arrived. The folder ends as the volume did: what the host seeded and the
    run removed or replaced (a file by a folder) is gone, as with a bind mount."""
    stream, _stat = container.get_archive(mount.target)
    received: dict[str, str] = {}
    with tempfile.TemporaryFile(prefix="reprocheck-get-") as spool:
        for chunk in stream:
            spool.write(chunk)
        spool.seek(0)
        try:
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = _members(tar, mount, received)
                _empty(mount.source)
                tar.extractall(mount.source, members=members, filter=_safe_member)
        except (OSError, tarfile.TarError, KeyError) as exc:  # a name too long here, …
            raise EngineError(
                f"the outputs in {mount.target} could not be copied back: "
                f"{type(exc).__name__}: {str(exc)[:300]!r}",
                fix="check the names and number of files the pipeline writes there",
            ) from exc
    return received


def _members(tar: tarfile.TarFile, mount: Mount, received: dict[str, str]) -> list[tarfile.TarInfo]:
    """The archive's members renamed to paths under the folder (hard links' targets too),
    and the sha256 of each file (a hard link's is its target's) into ``received``."""
    top = posixpath.basename(mount.target.rstrip("/"))
    members = []
    layout: bool | None = None  # members named TOP/… (Docker), else relative
    for member in tar:
        if layout is None:
            layout = member.name.rstrip("/") == top
        name = _under_folder(member.name, top, named_top=layout)
        if not name:
            continue
        where = posixpath.join(mount.target, name)
        if member.islnk():
            target = _under_folder(member.linkname, top, named_top=layout)
            if not target:
                continue
            member.linkname = target
            digest = received.get(posixpath.join(mount.target, target))
            if digest is not None:
                received[where] = digest
        member.name = name
        members.append(member)
        if member.isfile():
            received[where] = _member_sha(tar, member)
    return members


def _empty(folder: Path) -> None:
    """``folder``'s content removed (links not followed), the folder kept."""
    with os.scandir(folder) as listing:
        for item in listing:
            if item.is_dir(follow_symlinks=False):
                shutil.rmtree(item.path)
            else:
                Path(item.path).unlink()


def _under_folder(name: str, top: str, *, named_top: bool) -> str:
    """A member's path under the copied folder; "" for the folder itself or a member
    outside it. Docker names members ``TOP/…``; Podman 4.3 names them ``/…`` (or ``./…``),
    relative to the folder."""
    if named_top:
        head, _, rest = name.partition("/")
        return rest if head == top else ""
    rest = name.lstrip("/")
    while rest.startswith("./"):
        rest = rest[2:].lstrip("/")
    return "" if rest in ("", ".") else rest


def _member_sha(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    handle = tar.extractfile(member)
    if handle is not None:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, skipping (not failing on) what it refuses: a link that
    points outside the folder stays behind on the engine's host."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


def _manifest(outputs: list[_Output], container_path: str) -> dict[str, str] | None:
    """The harness's hashes of what it left (container path -> sha256), or None when there
    is no such file or it is not one (the pipeline can write there too: too big, not JSON,
    nested too deep to parse)."""
    for out in outputs:
        prefix = out.mount.target.rstrip("/") + "/"
        if container_path.startswith(prefix):
            path = out.mount.source / container_path[len(prefix) :]
            try:
                with path.open("rb") as handle:
                    text = handle.read(MANIFEST_LIMIT + 1)
                data = json.loads(text) if len(text) <= MANIFEST_LIMIT else None
            except (OSError, ValueError, RecursionError):
                return None
            files = data.get("files") if isinstance(data, dict) else None
            if isinstance(files, dict):
                return {str(k): str(v) for k, v in files.items()}
    return None
