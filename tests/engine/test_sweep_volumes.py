"""`reprocheck sweep` removes the data plane's leftover volumes on the real engine: a run's
output volumes always, the content-addressed input volumes only with --all; a volume a
container still uses and volumes that are not reprocheck's stay."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from reprocheck.engine import LABEL
from reprocheck.engine.transfer import VOLUME_LABEL

pytestmark = pytest.mark.docker


def _sweep(cwd: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "reprocheck.cli", "sweep", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sweep_removes_leftover_volumes(docker_client: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {kind: f"reprocheck-sweeptest-{kind}-{tag}" for kind in ("output", "input", "used")}
    kinds = {"output": "output", "input": "input", "used": "output"}
    made = [
        docker_client.volumes.create(names[k], labels={LABEL: "1", VOLUME_LABEL: kind})
        for k, kind in kinds.items()
    ]
    made.append(docker_client.volumes.create(f"not-ours-{tag}", labels={"other": "output"}))
    holder = docker_client.containers.create("debian:bookworm", ["true"],
                                             volumes={names["used"]: {"bind": "/v"}})  # fmt: skip
    try:
        assert "volume(s)" in _sweep(tmp_path)
        left = {v.name for v in docker_client.volumes.list()}
        assert names["output"] not in left
        assert {names["input"], names["used"], f"not-ours-{tag}"} <= left
        _sweep(tmp_path, "--all")
        left = {v.name for v in docker_client.volumes.list()}
        assert names["input"] not in left
        assert {names["used"], f"not-ours-{tag}"} <= left
    finally:
        holder.remove(force=True)
        for volume in made:
            with contextlib.suppress(Exception):  # removed by the sweep
                volume.remove(force=True)
