"""A fake :class:`~reprocheck.engine.base.ContainerEngine` for the unit tier (no Docker).

Its ``run`` plays the harness: it finds the host folders mounted at /meta and /out and
writes what a real container would (status.json, fingerprint.json, outputs), as decided
by a per-environment behaviour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reprocheck.engine import BuildRequest, ContainerOutcome, ContainerSpec, ImageInfo
from reprocheck.errors import EngineError, ImageBuildError


@dataclass
class Mounted:
    """What one fake container sees: its spec and the host folders behind /meta and /out."""

    spec: ContainerSpec
    meta: Path
    out: Path

    @property
    def plan(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.meta / "spec.json").read_text())
        return data

    def write_status(self, fixtures: dict[str, dict[str, Any]], **extra: Any) -> None:
        status = {"started": 0, "finished": 1, "harness_error": None, "fixtures": fixtures,
                  "command": None} | extra  # fmt: skip
        (self.meta / "status.json").write_text(json.dumps(status))

    def write_fingerprint(self, codename: str = "fake") -> None:
        fingerprint = {"os": {"VERSION_CODENAME": codename}, "glibc": "2.99"}
        (self.meta / "fingerprint.json").write_text(json.dumps(fingerprint))

    def write_outputs(self, fixture: str, **arrays: Any) -> None:
        path = self.out / f"{fixture}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)


Behaviour = Callable[[Mounted], ContainerOutcome]


def outcome(exit_code: int | None = 0, *, timed_out: bool = False, oom: bool = False,
            log: str = "") -> ContainerOutcome:  # fmt: skip
    return ContainerOutcome(exit_code=exit_code, timed_out=timed_out, oom_killed=oom, log=log,
                            duration=0.5)  # fmt: skip


def all_ok(box: Mounted) -> ContainerOutcome:
    """Every planned fixture succeeds with one output."""
    fixtures = box.plan["fixtures"]
    for fixture in fixtures:
        box.write_outputs(fixture, value=np.arange(3))
    box.write_status({f: {"status": "ok", "seconds": 0.1} for f in fixtures})
    box.write_fingerprint()
    return outcome(0)


def image_info(ref: str, image_id: str | None = None, **labels: str) -> ImageInfo:
    image_id = image_id or "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
    return ImageInfo(ref=ref, id=image_id, created="",
                     labels=labels)  # fmt: skip


@dataclass
class FakeEngine:
    """In-memory images; containers run a behaviour chosen by environment name."""

    name: str = "fake"
    where: str = "fake"
    local: bool = True
    present: dict[str, ImageInfo] = field(default_factory=dict)
    pullable: dict[str, ImageInfo] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    build_error: ImageBuildError | None = None
    pulls: list[str] = field(default_factory=list)
    # What push sends and pull fetches by ``NAME@sha256:…``: share one dict between two
    # fakes and it is a registry both reach.
    registry: dict[str, ImageInfo] = field(default_factory=dict)
    push_error: EngineError | None = None
    pushes: list[tuple[str, str, str]] = field(default_factory=list)
    builds: list[BuildRequest] = field(default_factory=list)
    runs: list[ContainerSpec] = field(default_factory=list)
    stops: list[dict[str, str]] = field(default_factory=list)

    def add(self, ref: str, image_id: str | None = None, **labels: str) -> ImageInfo:
        info = image_info(ref, image_id, **labels)
        self.present[ref] = info
        return info

    def host_info(self) -> dict[str, Any]:
        return {"engine": self.name, "where": self.where}

    def image(self, ref: str) -> ImageInfo | None:
        return self.present.get(ref)

    def images(self, label: str) -> list[ImageInfo]:
        return [i for i in self.present.values() if label in i.labels]

    def pull(self, ref: str) -> ImageInfo | None:
        self.pulls.append(ref)
        info = self.pullable.get(ref) or self.registry.get(ref)
        if info is not None:
            info = self.present[ref] = dataclasses.replace(info, ref=ref)
        return info

    def push(self, image: str, repository: str, tag: str) -> str:
        self.pushes.append((image, repository, tag))
        if self.push_error is not None:
            raise self.push_error
        info = self.present.get(image) or next(
            (i for i in self.present.values() if i.id == image), None
        )
        if info is None:
            raise EngineError(f"no image {image} to push")
        digest = "sha256:" + hashlib.sha256(info.id.encode()).hexdigest()  # the manifest's
        reference = f"{repository}@{digest}"
        pushed = dataclasses.replace(info, repo_digests=(*info.repo_digests, reference))
        self.present.update({key: pushed for key, i in self.present.items() if i.id == info.id})
        self.present[f"{repository}:{tag}"] = self.present[reference] = pushed
        self.registry[reference] = pushed
        return digest

    def build(self, request: BuildRequest, on_line: Callable[[str], None]) -> ImageInfo:
        self.builds.append(request)
        on_line("Step 1/1 : FROM fake")
        if self.build_error is not None:
            raise self.build_error
        return self.add(request.tag, f"sha256:built{len(self.builds):059d}", **request.labels)

    def import_rootfs(self, tarball: Path, ref: str, changes: tuple[str, ...]) -> ImageInfo:
        return self.add(ref)

    def run(self, spec: ContainerSpec) -> ContainerOutcome:
        self.runs.append(spec)
        by_target = {m.target: m.source for m in spec.mounts}
        box = Mounted(spec=spec, meta=by_target["/meta"], out=by_target["/out"])
        behaviour = self.behaviours.get(spec.labels["io.reprocheck.environment"], all_ok)
        return behaviour(box)

    def export_files(self, image: str, paths: tuple[str, ...]) -> dict[str, bytes]:
        return dict.fromkeys(paths, b"")

    def stop(self, labels: Mapping[str, str]) -> int:
        self.stops.append(dict(labels))
        return 0

    def sweep(self, *, everything: bool = False) -> int:
        return 0

    def sweep_volumes(self, *, everything: bool = False) -> int:
        return 0
