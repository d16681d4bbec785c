"""Environment images: Dockerfile folders built with the layer cache, references used as is,
and Debian base images bootstrapped from the archive when no registry can provide them."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.engine import LABEL, BuildRequest, ContainerEngine, ImageInfo
from reprocheck.errors import ConfigError, ImageBuildError
from reprocheck.progress import ProgressCallback, ProgressEvent, silent

CA_FILE = (
    "reprocheck-ca.crt"  # always present in build contexts; empty when no bundle is configured
)
CA_ENV_VARS = ("REPROCHECK_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
DEBIAN_SUITES = {
    "bullseye": "bullseye", "11": "bullseye",
    "bookworm": "bookworm", "12": "bookworm",
    "trixie": "trixie", "13": "trixie",
    "forky": "forky", "sid": "sid", "unstable": "sid",
}  # fmt: skip
_DEBIAN_REF = re.compile(r"^(?:(?:docker\.io/)?library/)?debian:(?P<suite>[a-z0-9]+)$")
# Bases of another CPU architecture get their own name, so they never replace the native
# debian:SUITE (Docker 20.10 keeps one image per tag, whatever its platform).
_FOREIGN_REF = re.compile(r"^reprocheck/debian-(?P<arch>[a-z0-9]+):(?P<suite>[a-z0-9]+)$")
_QEMU_NAMES = {"arm64": "aarch64", "armhf": "arm", "ppc64el": "ppc64le", "s390x": "s390x",
               "riscv64": "riscv64", "i386": None, "amd64": None}  # fmt: skip
_NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}
_IMPORT_CHANGES = (
    "ENV LANG=C.UTF-8",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["bash"]',
)
LABEL_DOCKERFILE = "io.reprocheck.dockerfile"
LABEL_CONTEXT = "io.reprocheck.context-sha256"
LABEL_BOOTSTRAP = "io.reprocheck.bootstrap"
LABEL_HYBRID = "io.reprocheck.hybrid"  # explain's transplant images


@dataclass(frozen=True, kw_only=True)
class EnvironmentImage:
    """The image an environment runs in, pinned by ID."""

    environment: str
    ref: str
    image_id: str
    dockerfile: Path | None
    architecture: str


def ca_bundle(config: RunConfig | None) -> Path | None:
    """The host CA bundle to pass to builds and containers (config first, then environment)."""
    configured = config.images.ca_bundle if config else None
    candidates = [configured] if configured else [os.environ.get(v) for v in CA_ENV_VARS]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser()
        if config and configured:
            path = config.root / path
        if path.is_file():
            return path.resolve()
        if configured:
            raise ConfigError(
                f"{config.source if config else ''}: images.ca_bundle {path} does not exist"
            )
    return None


def dockerfile_folder(config: RunConfig, env: EnvironmentConfig) -> Path | None:
    """The build folder when ``image`` names a folder with a Dockerfile, else None (a reference).
    The rule lives in the config, which checked it at load time."""
    return config.dockerfile_folder(env)


def base_images(dockerfile: Path) -> list[str]:
    """The external images a Dockerfile builds FROM (stage names and scratch excluded)."""
    stages: set[str] = set()
    bases: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if not args:
            continue
        if args[0] not in stages and args[0] != "scratch":
            bases.append(args[0])
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2])
    return bases


def debian_suite(ref: str) -> str | None:
    """The Debian suite of ``debian:SUITE`` or ``reprocheck/debian-ARCH:SUITE``, else None."""
    match = _DEBIAN_REF.match(ref) or _FOREIGN_REF.match(ref)
    return DEBIAN_SUITES.get(match["suite"]) if match else None


def debian_arch(ref: str, platform: str | None = None) -> str:
    """The Debian architecture a base reference (or an explicit platform) asks for."""
    match = _FOREIGN_REF.match(ref)
    if match:
        return match["arch"]
    if platform:
        return platform.rpartition("/")[2]
    return native_arch()


def native_arch() -> str:
    machine = os.uname().machine
    return _NATIVE.get(machine, machine)


def base_tag(suite: str, arch: str) -> str:
    """``debian:SUITE`` for this machine's architecture, ``reprocheck/debian-ARCH:SUITE`` else."""
    return f"debian:{suite}" if arch == native_arch() else f"reprocheck/debian-{arch}:{suite}"


class ImageBuilder:
    """Resolves environments to local images: pull or bootstrap bases, then build."""

    def __init__(
        self,
        engine: ContainerEngine,
        config: RunConfig,
        progress: ProgressCallback = silent,
        *,
        rebuild: bool = False,
    ) -> None:
        self._engine = engine
        self._config = config
        self._progress = progress
        # Build each Dockerfile once more without the layer cache (run --rebuild): a
        # long-lived runner otherwise never sees the distribution's package updates.
        self._rebuild = rebuild
        self._rebuilt: dict[Path, ImageInfo] = {}
        self._ca = ca_bundle(config)
        self._locks: dict[str, threading.Lock] = {}

    def resolve(self, env: EnvironmentConfig) -> EnvironmentImage:
        folder = dockerfile_folder(self._config, env)
        if folder is None:
            info = self.ensure_present(env.image)
            return _pinned(env, info, None)
        for base in base_images(folder / "Dockerfile"):
            self.ensure_present(base, platform=env.platform)
        with self._locks.setdefault(f"build:{folder}", threading.Lock()):  # once per folder
            info = self._build(env, folder)
        return _pinned(env, info, folder / "Dockerfile")

    def ensure_present(self, ref: str, platform: str | None = None) -> ImageInfo:
        with self._locks.setdefault(ref, threading.Lock()):  # parallel builds share bases
            return self._ensure_present(ref, platform)

    def _ensure_present(self, ref: str, platform: str | None) -> ImageInfo:
        info = self._engine.image(ref)
        if info is not None:
            return info
        self._progress(ProgressEvent(stage="pull", subject=ref, message=f"pulling {ref}"))
        info = self._engine.pull(ref)
        if info is not None:
            return info
        suite = debian_suite(ref)
        if suite is None or self._config.images.bootstrap == "never":
            raise ImageBuildError(
                f"image {ref} is not present locally and cannot be pulled",
                fix="pull, build or 'docker load' it first",
            )
        return bootstrap_debian(
            self._engine,
            ref,
            mirror=self._config.images.mirror,
            platform=platform,
            progress=self._progress,
        )

    def _build(self, env: EnvironmentConfig, folder: Path) -> ImageInfo:
        with _context_tar(folder, self._ca) as (tarball, digest):
            tag = f"reprocheck/{_slug(folder.name)}:{digest[:12]}"
            if folder in self._rebuilt:
                return self._rebuilt[folder]
            cached = self._engine.image(tag)
            if (
                not self._rebuild
                and cached is not None
                and cached.labels.get(LABEL_CONTEXT) == digest
            ):
                return cached
            self._progress(
                ProgressEvent(stage="build", subject=env.name, message=f"building {tag}")
            )
            request = BuildRequest(
                context_tar=tarball,
                tag=tag,
                labels={
                    LABEL: "1",
                    LABEL_DOCKERFILE: str(folder / "Dockerfile"),
                    LABEL_CONTEXT: digest,
                },
                buildargs={"REPROCHECK_CA": CA_FILE},
                platform=env.platform,
                nocache=self._rebuild,
            )
            started = time.monotonic()
            try:
                info = self._engine.build(request, self._build_line(env.name))
            except ImageBuildError as exc:
                raise ImageBuildError(
                    f"image {folder / 'Dockerfile'} (environment {env.name!r}): {exc.message}",
                    fix=exc.fix,
                ) from exc
            seconds = time.monotonic() - started
            if self._rebuild:
                self._rebuilt[folder] = info
            done = f"built {tag} in {seconds:.0f} s"
            self._progress(ProgressEvent(stage="build", subject=env.name, message=done,
                                         finished=True))  # fmt: skip
            return info

    def _build_line(self, subject: str) -> _LineForwarder:
        return _LineForwarder(self._progress, "build", subject)


class _LineForwarder:
    def __init__(self, progress: ProgressCallback, stage: str, subject: str) -> None:
        self._progress = progress
        self._stage = stage
        self._subject = subject

    def __call__(self, line: str) -> None:
        if line.strip():
            self._progress(
                ProgressEvent(stage="build", subject=self._subject, message=line.strip())
            )


def _pinned(env: EnvironmentConfig, info: ImageInfo, dockerfile: Path | None) -> EnvironmentImage:
    return EnvironmentImage(
        environment=env.name,
        ref=info.ref,
        image_id=info.id,
        dockerfile=dockerfile,
        architecture=info.architecture,
    )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "image"


def _context_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CA_FILE)


@contextmanager
def _context_tar(folder: Path, ca: Path | None) -> Iterator[tuple[Path, str]]:
    """The build context as a tarball, with the CA bundle added, and its content digest."""
    ca_bytes = ca.read_bytes() if ca else b""
    with tempfile.TemporaryDirectory(prefix="reprocheck-ctx-") as tmp:
        tarball = Path(tmp) / "context.tar"
        with tarfile.open(tarball, "w") as tar:
            for path in _context_files(folder):
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
            info = tarfile.TarInfo(CA_FILE)
            info.size, info.mode = len(ca_bytes), 0o644
            tar.addfile(info, io.BytesIO(ca_bytes))
        yield tarball, _context_digest(folder, ca_bytes)


def _context_digest(folder: Path, ca_bytes: bytes) -> str:
    """The content digest of a build context (its files and the CA bundle): the image's tag
    and its ``io.reprocheck.context`` label."""
    digest = hashlib.sha256()
    for path in _context_files(folder):
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(CA_FILE.encode() + b"\0" + ca_bytes)
    return digest.hexdigest()


def project_contexts(config: RunConfig) -> set[str]:
    """The context digests of the project's Dockerfile folders: an image with one of them
    is what building that folder gives, whichever project built it first."""
    ca = ca_bundle(config)
    ca_bytes = ca.read_bytes() if ca else b""
    folders = {f for env in config.environments if (f := dockerfile_folder(config, env))}
    return {_context_digest(folder, ca_bytes) for folder in folders}


def bootstrap_debian(
    engine: ContainerEngine,
    ref: str,
    *,
    mirror: str = "http://deb.debian.org/debian",
    platform: str | None = None,
    progress: ProgressCallback = silent,
) -> ImageInfo:
    """Build ``debian:SUITE`` from the Debian archive with debootstrap and tag it as ``ref``."""
    suite = debian_suite(ref)
    if suite is None:
        raise ImageBuildError(
            f"cannot bootstrap {ref}: only debian:SUITE references are supported",
            fix=f"use one of: {', '.join(sorted(set(DEBIAN_SUITES.values())))}",
        )
    _check_bootstrap_tools()
    arch = debian_arch(ref, platform)
    _check_emulation(arch)
    started = time.monotonic()
    progress(
        ProgressEvent(
            stage="bootstrap",
            subject=ref,
            message=f"{ref} is not available: building it from {mirror} with debootstrap",
        )
    )
    with tempfile.TemporaryDirectory(prefix="reprocheck-rootfs-", dir=_scratch_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(suite, rootfs, mirror, None if arch == native_arch() else arch, ref, progress)
        tarball = Path(tmp) / "rootfs.tar"
        progress(
            ProgressEvent(stage="bootstrap", subject=ref, message="importing the root filesystem")
        )
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        changes = (*_IMPORT_CHANGES, f"LABEL {LABEL_BOOTSTRAP}={suite}")
        info = engine.import_rootfs(tarball, base_tag(suite, arch), changes)
    ready = f"{ref} ready in {time.monotonic() - started:.0f} s"
    progress(ProgressEvent(stage="bootstrap", subject=ref, message=ready, finished=True))
    return info


def _check_emulation(arch: str) -> None:
    """A foreign architecture runs through qemu-user, registered with binfmt_misc."""
    if arch == native_arch():
        return
    if arch not in _QEMU_NAMES:
        known = ", ".join(sorted(_QEMU_NAMES))
        raise ImageBuildError(f"unknown Debian architecture {arch!r}", fix=f"use one of: {known}")
    qemu = _QEMU_NAMES[arch]
    if qemu and not Path(f"/proc/sys/fs/binfmt_misc/qemu-{qemu}").is_file():
        raise ImageBuildError(
            f"no qemu-{qemu} handler is registered, so {arch} programs cannot run here",
            fix="apt-get install -y qemu-user-static binfmt-support "
            "(and 'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc' if needed)",
        )


def _scratch_dir() -> str | None:
    return os.environ.get("REPROCHECK_SCRATCH") or None


def _check_bootstrap_tools() -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "debootstrap is not installed, so Debian base images cannot be built",
            fix="install it: apt-get install -y debootstrap",
        )
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building a Debian base image with debootstrap needs root",
            fix="run 'sudo reprocheck images bootstrap debian:SUITE' once",
        )


def _debootstrap(
    suite: str, rootfs: Path, mirror: str, arch: str | None, ref: str, progress: ProgressCallback
) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        *([f"--arch={arch}"] if arch else []),
        suite,
        str(rootfs),
        mirror,
    ]
    tail: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-5:], line.strip()]
            progress(ProgressEvent(stage="bootstrap", subject=ref, message=line.strip()))
    if proc.returncode != 0:
        raise ImageBuildError(
            f"debootstrap {suite} failed (exit {proc.returncode}): {' | '.join(tail)}",
            fix=f"check that {mirror} is reachable and serves {suite}",
        )
