"""Images by digest through a registry: push, the lock file, and delivery to other engines.

An engine that is not this machine's (a Docker host over ssh, Podman) cannot use the image
built here. It gets the image from a registry, by digest, never by a tag that could move:

* :func:`push_images` (``reprocheck images push``) tags and pushes each environment's image
  to ``[images] registry`` and records its digest in the lock file;
* :func:`deliver` makes an environment's image present on another engine: the lock's digest
  while the Dockerfile folder is unchanged, else a fresh push when a registry is configured.

The lock file (``[images] lock``, committed with the project) maps each environment to the
reference it was pushed as, the registry's digest, the build context's digest (what makes an
entry current) and the local image ID. It is written atomically, and a damaged one is one
:class:`ConfigError` naming the file.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reprocheck.config import EnvironmentConfig, RunConfig
from reprocheck.engine import ContainerEngine, ImageInfo
from reprocheck.errors import ConfigError, EngineError, UnsafeFileError
from reprocheck.images import (
    EnvironmentImage,
    ImageBuilder,
    context_of,
    is_digest_reference,
    slug,
)
from reprocheck.progress import ProgressCallback, ProgressEvent, silent
from reprocheck.safe_files import read_json_object
from reprocheck.store import write_atomic

LOCK_VERSION = 1
MAX_LOCK_BYTES = 16 * 1024**2  # far above any project's lock
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_ENTRY_TEXT = ("image", "pushed", "digest", "image_id")  # required strings of an entry
_ENTRY_OPTIONAL = ("context", "platform")  # strings or null
_LOCK_FIX = "run 'reprocheck images push' to write it again, or restore it from git"
_PUSH_HINT = "reprocheck images push --registry HOST[:PORT]/PREFIX"
# One lock for the lock file (environments deliver in parallel threads), one per image pushed.
_FILE_LOCK = threading.Lock()
_PUSH_LOCKS: dict[str, threading.Lock] = {}


@dataclass(frozen=True, kw_only=True)
class LockEntry:
    """One environment's image in the registry."""

    image: str  # the environment's ``image`` as configured
    pushed: str  # HOST[:PORT]/PREFIX/NAME:TAG, as pushed
    digest: str  # sha256:… (the registry's manifest digest)
    context: str | None  # the Dockerfile folder's context digest; None for a reference
    image_id: str  # the local image that was pushed
    platform: str | None = None

    @property
    def reference(self) -> str:
        """``HOST[:PORT]/PREFIX/NAME@sha256:…``: what other engines pull."""
        repository = self.pushed.rpartition(":")[0] if _has_tag(self.pushed) else self.pushed
        return f"{repository}@{self.digest}"


def _has_tag(reference: str) -> bool:
    return ":" in reference.rpartition("/")[2]


# --------------------------------------------------------------------------- the lock file


def lock_path(config: RunConfig) -> Path:
    """``[images] lock``, relative to the config file."""
    return config.root / config.images.lock


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The lock's entries by environment name; none when the file does not exist. A damaged
    file is a one-line :class:`ConfigError` naming it."""
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        data = read_json_object(path, MAX_LOCK_BYTES)
    except UnsafeFileError as exc:
        raise ConfigError(exc.message, fix=_LOCK_FIX) from exc
    version = data.get("lock_version")
    if version != LOCK_VERSION:
        raise _damaged(path, f"lock_version is {version!r}, this reprocheck reads {LOCK_VERSION}")
    environments = data.get("environments")
    if not isinstance(environments, dict):
        raise _damaged(path, "'environments' is not an object")
    return {name: _entry(path, name, value) for name, value in environments.items()}


def _entry(path: Path, name: str, value: Any) -> LockEntry:
    where = f"environments.{name}"
    if not isinstance(value, dict):
        raise _damaged(path, f"{where} is not an object")
    for key in _ENTRY_TEXT:
        if not isinstance(value.get(key), str) or not value[key]:
            raise _damaged(path, f"{where}.{key} is missing or not a string")
    for key in _ENTRY_OPTIONAL:
        if not isinstance(value.get(key), (str, type(None))):
            raise _damaged(path, f"{where}.{key} is not a string or null")
    if not _DIGEST_RE.fullmatch(value["digest"]):
        raise _damaged(path, f"{where}.digest {value['digest'][:80]!r} is not sha256:<64 hex>")
    if not _has_tag(value["pushed"]) or "@" in value["pushed"]:
        raise _damaged(path, f"{where}.pushed {value['pushed'][:80]!r} is not NAME:TAG")
    return LockEntry(image=value["image"], pushed=value["pushed"], digest=value["digest"],
                     context=value.get("context"), image_id=value["image_id"],
                     platform=value.get("platform"))  # fmt: skip


def _damaged(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path} is damaged: {' '.join(what.split())}", fix=_LOCK_FIX)


def write_lock(path: Path, entries: Mapping[str, LockEntry]) -> None:
    """Write the lock atomically, sorted and indented (it is reviewed in diffs)."""
    data = {
        "lock_version": LOCK_VERSION,
        "environments": {name: asdict(entries[name]) for name in sorted(entries)},
    }
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def record(path: Path, entries: Mapping[str, LockEntry]) -> None:
    """Add or replace ``entries`` in the lock, keeping the others."""
    with _FILE_LOCK:
        write_lock(path, {**read_lock(path), **entries})


# --------------------------------------------------------------------------- pushing


def push_image(
    config: RunConfig,
    engine: ContainerEngine,
    registry: str,
    env: EnvironmentConfig,
    image: EnvironmentImage,
    progress: ProgressCallback = silent,
) -> LockEntry:
    """Push ``image`` (``env``'s, on ``engine``) to ``registry``; its lock entry (not written)."""
    context = context_of(config, env)
    folder = image.dockerfile.parent.name if image.dockerfile else env.name.partition("@")[0]
    repository = f"{registry.rstrip('/')}/{slug(folder)}"
    tag = context[:12] if context else image.image_id.removeprefix("sha256:")[:12]
    with _PUSH_LOCKS.setdefault(f"{repository}:{tag}", threading.Lock()):  # once per image
        progress(ProgressEvent(stage="push", subject=env.name,
                               message=f"pushing {repository}:{tag}"))  # fmt: skip
        digest = engine.push(image.image_id, repository, tag)
    progress(ProgressEvent(stage="push", subject=env.name, finished=True,
                           message=f"pushed {repository}@{digest}"))  # fmt: skip
    return LockEntry(image=env.image, pushed=f"{repository}:{tag}", digest=digest,
                     context=context, image_id=image.image_id,
                     platform=env.platform)  # fmt: skip


def push_images(
    config: RunConfig,
    engine: ContainerEngine,
    registry: str,
    envs: Iterable[EnvironmentConfig],
    progress: ProgressCallback = silent,
) -> dict[str, LockEntry]:
    """Build what is missing, push each environment's image and record the digests in the
    lock; the new entries by environment name."""
    read_lock(lock_path(config))  # a damaged lock fails before anything is built or pushed
    builder = ImageBuilder(engine, config, progress)
    entries: dict[str, LockEntry] = {}
    for env in envs:
        if is_digest_reference(env.image):
            continue  # pinned by digest already: nothing to push or lock
        entries[env.name] = push_image(config, engine, registry, env, builder.resolve(env),
                                       progress)  # fmt: skip
    record(lock_path(config), entries)
    return entries


def pushed_references(config: RunConfig) -> dict[str, str]:
    """Local image ID -> ``HOST/NAME@sha256:…`` it was pushed as, from the lock."""
    return {entry.image_id: entry.reference for entry in read_lock(lock_path(config)).values()}


# --------------------------------------------------------------------------- delivery


def deliver(
    config: RunConfig,
    image: EnvironmentImage | None,
    env: EnvironmentConfig,
    engine: ContainerEngine,
    local: ContainerEngine,
    progress: ProgressCallback = silent,
) -> EnvironmentImage:
    """``env``'s image made present on ``engine`` (another engine than ``local``, which built
    or pulled ``image``), by digest: the returned image's ``ref`` and ``digest`` are
    ``HOST/NAME@sha256:…`` and its ``image_id`` the ID on ``engine``.

    An ``image`` that is a digest reference is pulled as it is (``image`` may be None then).
    Otherwise, in order: the lock's entry while its context digest matches the Dockerfile
    folder (for a reference: while it names the same local image); the registry digest the
    local image came with; a push to ``[images] registry``, recorded in the lock. Without any
    of these, a one-line ConfigError says how to give the image a registry."""
    if is_digest_reference(env.image):
        return _pulled(engine, env.image, env, image, progress)
    if image is None:
        raise ValueError(f"deliver needs environment {env.name!r}'s local image")
    path = lock_path(config)
    context = context_of(config, env)
    entry = _locked(read_lock(path), env, context, image.image_id)
    if entry is not None:
        return _pulled(engine, entry.reference, env, image, progress)
    if image.digest is not None:
        found = _pull(engine, image.digest, env, progress)
        if found is not None:
            return _delivered(image, found, image.digest)
    registry = config.images.registry
    if registry is None:
        raise ConfigError(
            f"environment {env.name!r} runs on {engine.where}; its image must travel through "
            f"a registry{_stale(read_lock(path), env)}",
            fix=f"set [images] registry in {config.source} or run '{_PUSH_HINT}'",
        )
    with _PUSH_LOCKS.setdefault(f"deliver:{context or image.image_id}", threading.Lock()):
        entry = _locked(read_lock(path), env, context, image.image_id)  # another thread's push
        if entry is None:
            entry = push_image(config, local, registry, env, image, progress)
            record(path, {env.name: entry})
    return _pulled(engine, entry.reference, env, image, progress)


def _locked(
    entries: Mapping[str, LockEntry], env: EnvironmentConfig, context: str | None, image_id: str
) -> LockEntry | None:
    """The current entry for ``env``: its own, else any of the same build (a CPU-model copy
    of the environment, another environment of the same folder)."""
    own = entries.get(env.name)
    if own is not None and _current(own, context, image_id):
        return own
    same = (e for e in entries.values() if e.platform == env.platform)
    return next((e for e in same if _current(e, context, image_id)), None)


def _current(entry: LockEntry, context: str | None, image_id: str) -> bool:
    if context is not None:
        return entry.context == context
    return entry.context is None and entry.image_id == image_id


def _stale(entries: Mapping[str, LockEntry], env: EnvironmentConfig) -> str:
    if env.name not in entries:
        return ""
    return f" (its entry in the lock was pushed from another version of {env.image})"


def _pull(
    engine: ContainerEngine, reference: str, env: EnvironmentConfig, progress: ProgressCallback
) -> ImageInfo | None:
    """``reference`` on ``engine``: present already, or pulled; None when it cannot be."""
    found = engine.image(reference)
    if found is not None:
        return found
    progress(ProgressEvent(stage="pull", subject=env.name,
                           message=f"pulling {reference} on {engine.where}"))  # fmt: skip
    return engine.pull(reference)


def _pulled(
    engine: ContainerEngine,
    reference: str,
    env: EnvironmentConfig,
    image: EnvironmentImage | None,
    progress: ProgressCallback,
) -> EnvironmentImage:
    found = _pull(engine, reference, env, progress)
    if found is None:
        registry = reference.partition("/")[0]
        raise EngineError(
            f"{engine.where} cannot pull {reference} (environment {env.name!r})",
            fix=f"check that the registry {registry} runs, holds it ('{_PUSH_HINT}' pushes "
            "it again) and is reachable from that host under this name",
        )
    if image is None:
        return EnvironmentImage(environment=env.name, ref=reference, image_id=found.id,
                                dockerfile=None, architecture=found.architecture,
                                digest=reference)  # fmt: skip
    return _delivered(image, found, reference)


def _delivered(image: EnvironmentImage, found: ImageInfo, reference: str) -> EnvironmentImage:
    return EnvironmentImage(
        environment=image.environment,
        ref=reference,
        image_id=found.id,
        dockerfile=image.dockerfile,
        architecture=found.architecture or image.architecture,
        digest=reference,
    )
