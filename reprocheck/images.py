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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.engine import LABEL, BuildRequest, ContainerEngine, ImageInfo
from reprocheck.engine.docker_sdk import PatternMatcher
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
LABEL_COMPOSE = "io.reprocheck.compose"  # compose:FILE#SERVICE, for a compose-built image
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
    # Where a registry holds it, by digest (``HOST/NAME@sha256:…``), when known: pushed
    # (``reprocheck images push``), pulled from a registry, or named so in ``image``.
    digest: str | None = None


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


@dataclass(frozen=True, kw_only=True)
class BuildRecipe:
    """What an environment's image is built from: a context folder, the Dockerfile in it and
    build args (a Dockerfile folder has none; a compose service may have some)."""

    context: Path
    name: str  # the tag's repository: the folder's or the compose service's name
    dockerfile: str = "Dockerfile"  # inside ``context``, '/'-separated
    args: tuple[tuple[str, str], ...] = ()
    left_out: tuple[Path, ...] = ()  # reprocheck's stored runs, when inside the context
    compose: str | None = None  # the ``compose:FILE#SERVICE`` it comes from

    @property
    def dockerfile_path(self) -> Path:
        return self.context / self.dockerfile


def build_recipe(config: RunConfig, env: EnvironmentConfig) -> BuildRecipe | None:
    """How ``env``'s image is built; None when ``image`` is a reference, or a compose service
    that only names one (:func:`image_reference`)."""
    folder = dockerfile_folder(config, env)
    if folder is not None:
        return BuildRecipe(context=folder, name=folder.name, left_out=config.stored_dirs)
    service = config.compose_service(env)
    if service is None or service.build is None:
        return None
    build = service.build
    return BuildRecipe(context=build.context, name=service.name, dockerfile=build.dockerfile,
                       args=tuple(sorted(build.args.items())), left_out=config.stored_dirs,
                       compose=service.source)  # fmt: skip


def image_reference(config: RunConfig, env: EnvironmentConfig) -> str:
    """The reference an environment without a build runs: ``image``, or its compose
    service's ``image``."""
    service = config.compose_service(env)
    return service.image if service is not None and service.image else env.image


def base_images(dockerfile: Path, args: Mapping[str, str] | None = None) -> list[str]:
    """The external images a Dockerfile builds FROM (stage names and scratch excluded).
    ``$NAME`` in a FROM takes the build arg ``args[NAME]``, else the default of an ARG
    declared before the first FROM; a base still naming a variable is left to the build."""
    stages: set[str] = set()
    bases: list[str] = []
    known, global_args = dict(args or {}), True
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        keyword = words[0].upper() if words else ""
        if keyword == "ARG" and global_args:
            known = _arg_defaults(words[1:]) | known
        if keyword != "FROM":
            continue
        global_args = False
        words = [w for w in words[1:] if not w.startswith("--")]
        base = _substituted(words[0], known) if words else "scratch"
        if base not in stages and base != "scratch" and "$" not in base:
            bases.append(base)
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return bases


def _substituted(text: str, known: Mapping[str, str]) -> str:
    return _FROM_VARIABLE.sub(lambda m: known.get(m[1] or m[2], m[0]), text)


_FROM_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _arg_defaults(words: list[str]) -> dict[str, str]:
    """``ARG NAME=default ...``: the defaults (quotes removed); an ARG without one has none."""
    pairs = (word.partition("=") for word in words)
    return {name: value.strip("\"'") for name, equals, value in pairs if equals}


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
        self._rebuilt: dict[BuildRecipe, ImageInfo] = {}
        self._ca = ca_bundle(config)
        self._locks: dict[str, threading.Lock] = {}

    def resolve(self, env: EnvironmentConfig) -> EnvironmentImage:
        recipe = build_recipe(self._config, env)
        registry = self._config.images.registry
        if recipe is None:
            info = self.ensure_present(image_reference(self._config, env))
            return _pinned(env, info, None, registry)
        for base in base_images(recipe.dockerfile_path, dict(recipe.args)):
            self.ensure_present(base, platform=env.platform)
        with self._locks.setdefault(f"build:{recipe}", threading.Lock()):  # once per recipe
            info = self._build(env, recipe)
        return _pinned(env, info, recipe.dockerfile_path, registry)

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

    def _build(self, env: EnvironmentConfig, recipe: BuildRecipe) -> ImageInfo:
        with _context_tar(recipe, self._ca) as (tarball, digest):
            tag = f"reprocheck/{slug(recipe.name)}:{digest[:12]}"
            if recipe in self._rebuilt:
                return self._rebuilt[recipe]
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
                    LABEL_DOCKERFILE: str(recipe.dockerfile_path),
                    LABEL_CONTEXT: digest,
                    **({LABEL_COMPOSE: recipe.compose} if recipe.compose else {}),
                },
                dockerfile=recipe.dockerfile,
                buildargs={**dict(recipe.args), "REPROCHECK_CA": CA_FILE},
                platform=env.platform,
                nocache=self._rebuild,
            )
            started = time.monotonic()
            try:
                info = self._engine.build(request, self._build_line(env.name))
            except ImageBuildError as exc:
                raise ImageBuildError(
                    f"image {recipe.dockerfile_path} (environment {env.name!r}): {exc.message}",
                    fix=exc.fix,
                ) from exc
            seconds = time.monotonic() - started
            if self._rebuild:
                self._rebuilt[recipe] = info
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


def _pinned(
    env: EnvironmentConfig, info: ImageInfo, dockerfile: Path | None, registry: str | None
) -> EnvironmentImage:
    return EnvironmentImage(
        environment=env.name,
        ref=info.ref,
        image_id=info.id,
        dockerfile=dockerfile,
        architecture=info.architecture,
        digest=repo_digest(info, registry),
    )


def is_digest_reference(ref: str) -> bool:
    """``NAME@sha256:…``: a reference that names one image, whatever a tag points at."""
    return "@" in ref


def repo_digest(info: ImageInfo, registry: str | None = None) -> str | None:
    """The image's ``HOST/NAME@sha256:…``: its own reference when that is one, else one of
    its repo digests (the configured registry's first)."""
    if is_digest_reference(info.ref):
        return info.ref
    ours = [d for d in info.repo_digests if registry and d.startswith(f"{registry}/")]
    return next(iter([*ours, *info.repo_digests]), None)


def slug(name: str) -> str:
    """``name`` as a repository path component (lowercase, ``[a-z0-9._-]``)."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "image"


def _context_files(recipe: BuildRecipe) -> list[Path]:
    """The context's files, without reprocheck's stored runs and what ``.dockerignore``
    excludes (with Docker's rules; the Dockerfile is always sent)."""
    found: list[Path] = []
    for folder, subfolders, names in os.walk(recipe.context):
        here = Path(folder)
        subfolders[:] = [d for d in subfolders if here / d not in recipe.left_out]
        found += [here / n for n in names if n != CA_FILE and (here / n).is_file()]
    ignore = recipe.context / ".dockerignore"
    if ignore.is_file():
        lines = (line.strip() for line in ignore.read_text(errors="replace").splitlines())
        patterns = [line for line in lines if line and not line.startswith("#")]
        matcher = PatternMatcher([*patterns, f"!{recipe.dockerfile}"])
        found = [p for p in found if not matcher.matches(p.relative_to(recipe.context).as_posix())]
    return sorted(found)


@contextmanager
def _context_tar(recipe: BuildRecipe, ca: Path | None) -> Iterator[tuple[Path, str]]:
    """The build context as a tarball, with the CA bundle added, and its content digest."""
    ca_bytes = ca.read_bytes() if ca else b""
    with tempfile.TemporaryDirectory(prefix="reprocheck-ctx-") as tmp:
        tarball = Path(tmp) / "context.tar"
        with tarfile.open(tarball, "w") as tar:
            for path in _context_files(recipe):
                tar.add(path, arcname=path.relative_to(recipe.context).as_posix(),
                        recursive=False)  # fmt: skip
            info = tarfile.TarInfo(CA_FILE)
            info.size, info.mode = len(ca_bytes), 0o644
            tar.addfile(info, io.BytesIO(ca_bytes))
        yield tarball, _context_digest(recipe, ca_bytes)


def _context_digest(recipe: BuildRecipe, ca_bytes: bytes) -> str:
    """The content digest of a build context (its files and the CA bundle) and of what is
    built from it (a Dockerfile other than ``Dockerfile``, build args): the image's tag and
    its ``io.reprocheck.context`` label, so a changed build arg builds again."""
    digest = hashlib.sha256()
    for path in _context_files(recipe):
        rel = path.relative_to(recipe.context).as_posix()
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(CA_FILE.encode() + b"\0" + ca_bytes)
    if recipe.dockerfile != "Dockerfile":  # a folder's digest stays what it was
        digest.update(b"\0dockerfile\0" + recipe.dockerfile.encode())
    for name, value in recipe.args:
        digest.update(b"\0arg\0" + name.encode() + b"\0" + value.encode())
    return digest.hexdigest()


def context_of(config: RunConfig, env: EnvironmentConfig) -> str | None:
    """The context digest building ``env`` gives now (the ``io.reprocheck.context-sha256``
    label of its image); None when ``image`` is a reference."""
    recipe = build_recipe(config, env)
    if recipe is None:
        return None
    ca = ca_bundle(config)
    return _context_digest(recipe, ca.read_bytes() if ca else b"")


def project_contexts(config: RunConfig) -> set[str]:
    """The context digests of the project's Dockerfile folders and compose builds: an image
    with one of them is what building that gives, whichever project built it first."""
    ca = ca_bundle(config)
    ca_bytes = ca.read_bytes() if ca else b""
    recipes = {r for env in config.environments if (r := build_recipe(config, env))}
    return {_context_digest(recipe, ca_bytes) for recipe in recipes}


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
