"""Docker Engine through the ``docker`` SDK (also serves Podman's Docker-compatible socket)."""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests.exceptions

from reprocheck.cache import FileHashes
from reprocheck.engine.base import (
    LABEL,
    OWNER_LABEL,
    RUN_LABEL,
    BuildRequest,
    ContainerOutcome,
    ContainerSpec,
    ImageInfo,
    LineCallback,
    owner_alive,
    owner_label,
)
from reprocheck.engine.docker_sdk import docker
from reprocheck.engine.targets import PODMAN, EngineTarget, podman_socket
from reprocheck.engine.transfer import VOLUME_LABEL, Transfer, VolumePlane
from reprocheck.errors import ConfigError, EngineError, EngineUnavailableError, ImageBuildError

KEEP_ENV = "REPROCHECK_KEEP_CONTAINERS"  # debugging: leave containers behind for inspection
_LOG_TAIL_LINES = 400
_START_HINT = (
    "start one: 'sudo dockerd >/var/log/dockerd.log 2>&1 &' (or 'sudo systemctl start docker'), "
    "or set DOCKER_HOST"
)


def _image_info(image: Any, ref: str) -> ImageInfo:
    attrs = image.attrs
    return ImageInfo(
        ref=ref,
        id=image.id,
        created=str(attrs.get("Created", "")),
        labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
        size=int(attrs.get("Size", 0)),
        architecture=str(attrs.get("Architecture", "")),
        tags=tuple(image.tags),
        repo_digests=tuple(str(d) for d in attrs.get("RepoDigests") or ()),
    )


def _failing_step(log: list[str]) -> str:
    steps = [line for line in log if line.startswith("Step ")]
    return steps[-1].strip() if steps else "(before the first step)"


class DockerEngine:
    """:class:`~reprocheck.engine.base.ContainerEngine` over a Docker Engine API socket
    (Docker's, or Podman's compatible one). ``local``: the engine sees this machine's files,
    so mounts are bind mounts; else they travel through volumes (:mod:`.transfer`)."""

    def __init__(
        self, client: Any, *, name: str = "docker", where: str = "docker", local: bool = True,
        hashes: FileHashes | None = None,
    ) -> None:  # fmt: skip
        self._client = client
        self.name = name
        self.where = where
        self.local = local
        self._plane = None if local else VolumePlane(client, hashes)

    @classmethod
    def connect(cls, target: EngineTarget, hashes: FileHashes | None = None) -> DockerEngine:
        """The engine at ``target``, answering; one-line errors naming the address."""
        if target.default:
            return cls.from_env()
        base_url, tls = _address(target)
        kwargs: dict[str, Any] = {"base_url": base_url, "timeout": 600}
        if base_url.startswith("ssh://"):
            kwargs["use_ssh_client"] = True  # the ssh binary: ~/.ssh/config, agents, keys
            _tolerate_ended_ssh()
        if tls is not None:
            kwargs["tls"] = tls
        try:
            client = docker.DockerClient(**kwargs)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            hint = "check the address and that its engine runs"
            if target.kind == PODMAN:
                hint = f"start it: 'podman system service --time=0 {base_url} &'"
            raise EngineUnavailableError(
                f"cannot reach {target.describe()} ({base_url}): {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                fix=hint,
            ) from exc
        local = base_url.startswith("unix://")
        return cls(client, name=target.kind, where=target.describe(), local=local,
                   hashes=hashes)  # fmt: skip

    def host_info(self) -> dict[str, Any]:
        """What the engine says of its machine: for fingerprints and cache keys."""
        try:
            info = self._client.info()
            version = self._client.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return {"engine": self.name, "where": self.where}
        return {
            "engine": self.name,
            "where": self.where,
            "id": str(info.get("ID", "")),
            "name": str(info.get("Name", "")),
            "os": str(info.get("OperatingSystem", "")),
            "architecture": str(info.get("Architecture", "")),
            "cpus": int(info.get("NCPU", 0) or 0),
            "memory": int(info.get("MemTotal", 0) or 0),
            "server_version": str(version.get("Version", "")),
        }

    @classmethod
    def from_env(cls) -> DockerEngine:
        try:
            client = docker.from_env(timeout=600)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise EngineUnavailableError(
                f"cannot reach a Docker Engine at {where}: {type(exc).__name__}", fix=_START_HINT
            ) from exc
        return cls(client)

    def image(self, ref: str) -> ImageInfo | None:
        try:
            return _image_info(self._client.images.get(ref), ref)
        except docker.errors.ImageNotFound:
            return None

    def images(self, label: str) -> list[ImageInfo]:
        found = self._client.images.list(filters={"label": label})
        return [_image_info(img, img.tags[0] if img.tags else img.short_id) for img in found]

    def remove_image(self, ref: str) -> bool:
        try:
            self._client.images.remove(ref)
        except (docker.errors.ImageNotFound, docker.errors.APIError):
            return False  # gone already, or a container (or another tag's child) uses it
        return True

    def pull(self, ref: str) -> ImageInfo | None:
        try:
            return _image_info(self._client.images.pull(_by_digest(ref)), ref)
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return None

    def push(self, image: str, repository: str, tag: str) -> str:
        registry = repository.partition("/")[0]
        try:
            self._client.api.tag(image, repository, tag)
            stream = self._client.api.push(repository, tag=tag, stream=True, decode=True)
            digest = ""
            for chunk in stream:
                if "error" in chunk:
                    raise _push_error(repository, tag, str(chunk["error"]))
                digest = str((chunk.get("aux") or {}).get("Digest", "")) or digest
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise _push_error(repository, tag, str(exc)) from exc
        digest = digest or self._pushed_digest(repository)
        if not digest.startswith("sha256:"):
            raise EngineError(f"{self.where} pushed {repository}:{tag} to {registry} but "
                              "reported no digest", fix=_push_fix(registry))  # fmt: skip
        return digest

    def _pushed_digest(self, repository: str) -> str:
        """The digest from the image's RepoDigests (engines whose push stream names none)."""
        info = self.image(repository)
        found = [d for d in info.repo_digests if d.partition("@")[0] == repository] if info else []
        return found[0].partition("@")[2] if found else ""

    def build(self, request: BuildRequest, on_line: LineCallback) -> ImageInfo:
        log: list[str] = []
        image_id = ""
        with request.context_tar.open("rb") as context:
            stream = self._client.api.build(
                fileobj=context,
                custom_context=True,
                tag=request.tag,
                dockerfile=request.dockerfile,
                buildargs=dict(request.buildargs),
                labels=dict(request.labels),
                pull=False,
                nocache=request.nocache,
                rm=True,
                forcerm=True,
                decode=True,
                platform=request.platform,
            )
            for chunk in stream:
                image_id = self._consume(chunk, log, on_line) or image_id
        if not image_id:
            raise ImageBuildError(f"build of {request.tag} produced no image")
        info = self.image(request.tag)
        assert info is not None
        return info

    @staticmethod
    def _consume(chunk: dict[str, Any], log: list[str], on_line: LineCallback) -> str:
        if "error" in chunk:
            tail = " | ".join(line.strip() for line in log[-6:] if line.strip())
            raise ImageBuildError(
                f"{_failing_step(log)} failed: {chunk['error'].strip()}; log tail: {tail}",
                fix="fix the Dockerfile step above and re-run",
            )
        text = chunk.get("stream")
        if text:
            for line in text.splitlines():
                log.append(line)
                on_line(line)
        aux = chunk.get("aux") or {}
        return str(aux.get("ID", ""))

    def import_rootfs(self, tarball: Path, ref: str, changes: tuple[str, ...]) -> ImageInfo:
        repository, _, tag = ref.rpartition(":")
        self._client.api.import_image(
            src=str(tarball), repository=repository, tag=tag, changes=list(changes)
        )
        info = self.image(ref)
        if info is None:
            raise ImageBuildError(f"docker import of {ref} did not create the image")
        return info

    def run(self, spec: ContainerSpec) -> ContainerOutcome:
        try:
            return self._run(spec)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            if "executable file not found" in str(exc):
                raise EngineError(
                    f"image {spec.image} has no {spec.command[0]!r}: the harness needs Python "
                    ">= 3.9 with numpy in the image",
                    fix="install python3 and python3-numpy in its Dockerfile, "
                    "or set the environment's 'python' to the interpreter's path",
                ) from exc
            raise EngineError(
                f"the engine could not run a container of {spec.image}: {exc}",
                fix="check the [run] settings and that the image still exists",
            ) from exc

    def _run(self, spec: ContainerSpec) -> ContainerOutcome:
        if self._plane is None:
            return self._run_with(spec, None)
        with self._plane.prepared(spec) as transfer:
            return self._run_with(spec, transfer)

    def _run_with(self, spec: ContainerSpec, transfer: Transfer | None) -> ContainerOutcome:
        started = time.monotonic()
        with self._container(spec, transfer) as container:
            container.start()
            timed_out = self._wait(container, spec.timeout)
            container.reload()
            state = container.attrs["State"]
            log = container.logs(stdout=True, stderr=True, tail=_LOG_TAIL_LINES)
            duration = time.monotonic() - started
            if transfer is not None and self._plane is not None:
                self._plane.collect(container, transfer)
        return ContainerOutcome(
            exit_code=None if timed_out else int(state.get("ExitCode", -1)),
            timed_out=timed_out,
            oom_killed=bool(state.get("OOMKilled")),
            log=log.decode("utf-8", "replace"),
            duration=duration,
            transfer=dict(transfer.figures) if transfer is not None else {},
        )

    @staticmethod
    def _wait(container: Any, timeout: float) -> bool:
        try:
            container.wait(timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            container.kill()
            container.wait(timeout=60)
            return True
        return False

    @contextmanager
    def _container(self, spec: ContainerSpec, transfer: Transfer | None = None) -> Iterator[Any]:
        kwargs = _create_kwargs(spec)
        if transfer is not None:  # no host path on that machine: volumes instead
            kwargs["volumes"] = transfer.volumes
            kwargs["environment"] = {**kwargs["environment"], **transfer.env}
        if self.name == PODMAN:  # Podman fills a tmpfs with what it covers (tmpcopyup) unless
            # told not to (Docker refuses the option): a masked folder would show its files.
            kwargs["tmpfs"] = {path: f"{options},notmpcopyup" if path in spec.masked else options
                               for path, options in kwargs["tmpfs"].items()}  # fmt: skip
        container = self._client.containers.create(**kwargs)
        try:
            yield container
        finally:
            if not os.environ.get(KEEP_ENV):
                _remove(container)

    def export_files(self, image: str, paths: tuple[str, ...]) -> dict[str, bytes]:
        labels = {LABEL: "1", OWNER_LABEL: owner_label()}
        container = self._client.containers.create(image, command=["true"], labels=labels)
        try:
            return {path: _read_member(container, path) for path in paths}
        finally:
            _remove(container)

    def _listed(self, labels: list[str]) -> list[tuple[str, dict[str, str]]]:
        """(id, labels) of containers with all ``labels``, from the list call alone: the
        SDK's ``containers.list`` inspects each one, and fails when one is removed meanwhile
        (as this run's own containers are while it stops)."""
        found = self._client.api.containers(all=True, filters={"label": labels})
        return [(str(c["Id"]), dict(c.get("Labels") or {})) for c in found]

    def stop(self, labels: Mapping[str, str]) -> int:
        wanted = [f"{key}={value}" for key, value in labels.items()]
        return sum(self._remove_id(cid) for cid, _labels in self._listed(wanted))

    def sweep(self, *, everything: bool = False) -> int:
        ours = [(cid, labels) for cid, labels in self._listed([LABEL])
                if OWNER_LABEL in labels or RUN_LABEL in labels]  # fmt: skip
        orphans = [cid for cid, labels in ours if everything or _orphaned(labels)]
        return sum(self._remove_id(cid) for cid in orphans)

    def sweep_volumes(self, *, everything: bool = False) -> int:
        kinds = ("output", "input", "ready") if everything else ("output",)
        removed = 0
        for kind in kinds:
            found = self._client.volumes.list(filters={"label": f"{VOLUME_LABEL}={kind}",
                                                       "dangling": True})  # fmt: skip
            for volume in found:
                try:
                    volume.remove()
                except docker.errors.APIError:  # in use by now, or removed meanwhile
                    continue
                removed += 1
        return removed

    def _remove_id(self, container_id: str) -> bool:
        return _remove_call(lambda: self._client.api.remove_container(container_id, force=True))


def _by_digest(ref: str) -> str:
    """``NAME@sha256:…`` for ``NAME:TAG@sha256:…``: the SDK splits a reference at ``@`` and
    would send ``NAME:TAG`` as the repository; the digest alone names the image."""
    name, at, digest = ref.partition("@")
    if not at:
        return ref
    head, slash, last = name.rpartition("/")
    return f"{head}{slash}{last.partition(':')[0]}@{digest}"


def _push_fix(registry: str) -> str:
    return (
        f"check that the registry at {registry} runs and answers ('curl http://{registry}/v2/'); "
        "a registry without TLS other than 127.0.0.1/localhost must be listed in the engine's "
        "insecure-registries"
    )


def _push_error(repository: str, tag: str, error: str) -> EngineError:
    registry = repository.partition("/")[0]
    reason = " ".join(error.split())[:300]
    return EngineError(f"cannot push {repository}:{tag} to the registry {registry}: {reason}",
                       fix=_push_fix(registry))  # fmt: skip


_SSH_CLOSE_PATCHED = threading.Event()


def _tolerate_ended_ssh() -> None:
    """docker-py's ``SSHSocket.close`` writes to its ssh process's stdin, which raises
    BrokenPipeError when that ssh ended already (the host went away, or a test's sshd
    stopped): at interpreter exit that prints one traceback per pooled connection. Close
    such a socket quietly: the process is only terminated."""
    if _SSH_CLOSE_PATCHED.is_set():
        return
    from docker.transport import sshconn

    original = sshconn.SSHSocket.close

    def close(self: Any) -> None:
        try:
            original(self)
        except OSError:
            if self.proc is not None:
                self.proc.terminate()

    sshconn.SSHSocket.close = close
    _SSH_CLOSE_PATCHED.set()


def _address(target: EngineTarget) -> tuple[str, Any]:
    """The API address of ``target`` and its TLS settings (None: none)."""
    if target.context is not None:
        from docker.context import ContextAPI

        context = ContextAPI.get_context(target.context)
        if context is None:
            known = ", ".join(c.Name for c in ContextAPI.contexts())
            raise ConfigError(f"no docker context named {target.context!r}",
                              fix=f"known: {known}; see 'docker context ls'")  # fmt: skip
        return str(context.Host), context.TLSConfig
    host = target.host or (podman_socket() if target.kind == PODMAN else None)
    assert host is not None
    if not host.startswith("tcp://"):
        return host, None
    return host, _tls_from_env()


def _tls_from_env() -> Any:
    """TLS client settings from ``$DOCKER_CERT_PATH`` (or ``~/.docker``) when it holds
    ``ca.pem``, ``cert.pem`` and ``key.pem``; None (plain tcp) otherwise."""
    import docker.tls

    folder = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    files = [folder / name for name in ("ca.pem", "cert.pem", "key.pem")]
    if not all(path.is_file() for path in files):
        return None
    ca, cert, key = (str(path) for path in files)
    return docker.tls.TLSConfig(client_cert=(cert, key), ca_cert=ca, verify=True)


def _orphaned(labels: Mapping[str, str]) -> bool:
    """A container reprocheck made whose owner process is gone (or that predates owner
    labels). Containers a user started from a reprocheck image inherit the image's
    LABEL but carry neither a run nor an owner: they are not ours to remove."""
    owner = labels.get(OWNER_LABEL)
    if owner is None:
        return RUN_LABEL in labels
    return owner_alive(owner) is False


def _remove(container: Any) -> bool:
    return _remove_call(lambda: container.remove(force=True))


def _remove_call(remove: Callable[[], object]) -> bool:
    """Run a forced removal; False when the container is gone or going already."""
    try:
        remove()
    except docker.errors.NotFound:
        return False  # removed meanwhile (by its own runner)
    except docker.errors.APIError as exc:
        if "already in progress" in str(exc):
            return False
        raise
    return True


def _read_member(container: Any, path: str, depth: int = 0) -> bytes:
    """One file from a created container, following symlinks inside the image."""
    stream, _stat = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.next()
        if member is None:
            raise ImageBuildError(f"{path} is empty in the image")
        if member.issym() and depth < 8:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
            return _read_member(container, target, depth + 1)
        handle = archive.extractfile(member)
        if handle is None:
            raise ImageBuildError(f"{path} is not a regular file in the image")
        return handle.read()


def _create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    return {
        "image": spec.image,
        "command": list(spec.command),
        "environment": dict(spec.env),
        "working_dir": spec.workdir,
        "user": spec.user,
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,
        "nano_cpus": int(spec.cpus * 1e9) if spec.cpus else None,
        "pids_limit": spec.pids_limit,
        "network_mode": spec.network,
        "read_only": spec.read_only,
        "shm_size": spec.shm_size,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "tmpfs": {"/tmp": "rw,exec,size=2g"} | dict.fromkeys(spec.masked, "ro,size=4k"),
        "labels": {LABEL: "1", **spec.labels},
        # a list, not a dict by source: the project folder may also be the fixtures folder
        "volumes": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts],
        "platform": spec.platform,
        "detach": True,
    }
