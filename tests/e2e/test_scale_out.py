"""Issue 12's "done when", on real engines: the example's bookworm environment run on a
second Docker daemon reached over ssh (its image pushed to a local registry and pulled there
by digest, the files through the engine API, 2 shards), and on Podman, gives the verdicts and
metrics the all-local run gives."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from remote_engines import MEASURED
from test_cli_run import reprocheck
from test_workflows import example_project

pytestmark = pytest.mark.docker

ENVS = ("--env", "bullseye", "--env", "bookworm")


def _with(project: Path, registry: str, bookworm: str) -> None:
    """The example's config with ``[images] registry`` and extra keys for bookworm."""
    config = project / "reprocheck.toml"
    text = config.read_text()
    text = text.replace('name = "bookworm"\n', f'name = "bookworm"\n{bookworm}', 1)
    config.write_text(f'{text}\n[images]\nregistry = "{registry}/reprocheck-e2e"\n')


def _comparisons(run: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(run / "comparisons.parquet").to_pylist()
    return sorted(rows, key=lambda row: (row["output"], row["baseline"], row["candidate"]))


def _metrics(run: Path) -> Any:
    return json.loads((run / "report.json").read_text())["metrics"]


def _run(project: Path, out: Path, *extra: str) -> tuple[float, str]:
    started = time.monotonic()
    done = reprocheck(project, "run", *ENVS, "--out", str(out), *extra)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return time.monotonic() - started, done.stdout


def _environment(run: Path, name: str) -> dict[str, Any]:
    entries = json.loads((run / "run.json").read_text())["environments"]
    return next(e for e in entries if e["name"] == name)


def test_bookworm_on_a_second_daemon_over_ssh_in_two_shards(
    tmp_path: Path, registry: str, ssh_docker_host: str
) -> None:
    local = example_project(tmp_path / "local")
    local_seconds, _ = _run(local, tmp_path / "all-local", "--no-cache")

    remote = example_project(tmp_path / "remote")
    _with(remote, registry, f'host = "{ssh_docker_host}"\nshards = 2\n')
    first, _ = _run(remote, tmp_path / "remote-1", "--no-cache")
    again, _ = _run(remote, tmp_path / "remote-2", "--no-cache")
    MEASURED["example bullseye+bookworm, all local (s)"] = round(local_seconds, 1)
    MEASURED["same, bookworm over ssh in 2 shards, first (s)"] = round(first, 1)
    MEASURED["same, repeated (inputs reused) (s)"] = round(again, 1)

    assert _comparisons(tmp_path / "remote-1") == _comparisons(tmp_path / "all-local")
    assert _metrics(tmp_path / "remote-1") == _metrics(tmp_path / "all-local")

    env = _environment(tmp_path / "remote-1", "bookworm")
    assert env["status"] == "ok"
    assert (
        env["image_ref"].startswith(f"{registry}/reprocheck-e2e/")
        and "@sha256:" in env["image_ref"]
    )
    lock = json.loads((remote / "reprocheck.lock.json").read_text())
    assert env["image_digest"].endswith("@" + lock["environments"]["bookworm"]["digest"])
    fingerprint = json.loads(
        (tmp_path / "remote-1/environments/bookworm/meta/fingerprint.json").read_text()
    )
    local_fingerprint = json.loads(
        (tmp_path / "all-local/environments/bookworm/meta/fingerprint.json").read_text()
    )
    assert fingerprint["engine"]["where"] == f"docker at {ssh_docker_host}"
    assert fingerprint["engine"]["id"] != local_fingerprint["engine"]["id"]  # another daemon
    log = (tmp_path / "remote-1/environments/bookworm/log.txt").read_text()
    assert "==> shard 0 <==" in log and "==> shard 1 <==" in log
    # Each shard copied in what its volumes lacked once; the second run found them all.
    for run in ("remote-1", "remote-2"):
        transfer = json.loads(
            (tmp_path / run / "environments/bookworm/meta/transfer.json").read_text()
        )
        assert sorted(transfer) == ["shard 0", "shard 1"]
        copied = sum(shard["inputs_copied"] for shard in transfer.values())
        MEASURED[f"{run}: input volumes copied / reused"] = (
            f"{copied} / {sum(s['inputs_reused'] for s in transfer.values())}, "
            f"{sum(s['copy_in_seconds'] for s in transfer.values()):.2f} s in"
        )
        assert all(shard["verified_out"] for shard in transfer.values())
        if run == "remote-2":
            assert copied == 0


def test_bookworm_on_podman(tmp_path: Path, registry: str, podman_host: str) -> None:
    local = example_project(tmp_path / "local")
    _run(local, tmp_path / "all-local", "--no-cache")
    project = example_project(tmp_path / "podman")
    _with(project, registry, f'engine = "podman"\nhost = "{podman_host}"\n')
    seconds, _ = _run(project, tmp_path / "podman-run", "--no-cache")
    MEASURED["example bullseye+bookworm, bookworm on podman (s)"] = round(seconds, 1)
    assert _comparisons(tmp_path / "podman-run") == _comparisons(tmp_path / "all-local")
    assert _metrics(tmp_path / "podman-run") == _metrics(tmp_path / "all-local")
    fingerprint = json.loads(
        (tmp_path / "podman-run/environments/bookworm/meta/fingerprint.json").read_text()
    )
    assert fingerprint["engine"]["engine"] == "podman"
