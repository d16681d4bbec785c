"""Sharding on the real engine: the example's bookworm environment split across 3
containers gives byte for byte the outputs, probe arrays and fingerprint one container
gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_run import reprocheck
from test_workflows import example_project

pytestmark = pytest.mark.docker


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_three_shards_equal_one_container(tmp_path: Path) -> None:
    project = example_project(tmp_path / "project")
    config = project / "reprocheck.toml"
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    done = reprocheck(project, "run", "--env", "bookworm", "--out", str(whole), "--no-cache")
    assert done.returncode == 0, done.stderr
    config.write_text(config.read_text().replace('name = "bookworm"\n',
                                                 'name = "bookworm"\nshards = 3\n'))  # fmt: skip
    done = reprocheck(project, "run", "--env", "bookworm", "--out", str(sharded), "--no-cache")
    assert done.returncode == 0, done.stderr
    one, three = whole / "environments/bookworm", sharded / "environments/bookworm"
    log = (three / "log.txt").read_text()
    assert [f"==> shard {k} <==" in log for k in range(4)] == [True, True, True, False]
    assert _files(three / "outputs") == _files(one / "outputs")
    # Probe arrays are equal byte for byte. The `.libraries.json` records which shared
    # libraries a process loaded during each stage: a library loads once per process, at the
    # stage of the first fixture that needs it, so those records follow the process history.
    probes = [{k: v for k, v in _files(f / "meta/probes").items()
               if not k.endswith(".libraries.json")} for f in (one, three)]  # fmt: skip
    assert probes[0] == probes[1] and len(probes[0]) == 6
    fingerprints = [json.loads((f / "meta/fingerprint.json").read_text()) for f in (one, three)]
    assert fingerprints[0] == fingerprints[1]
    status = json.loads((three / "meta/status.json").read_text())
    assert sorted(status["fixtures"]) == sorted(p.name for p in (project / "fixtures").iterdir())
