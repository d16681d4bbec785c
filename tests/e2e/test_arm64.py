"""The example on another CPU architecture: bookworm x86-64 against bookworm arm64 under
qemu-user, through the real engine (base bootstrapped with --arch arm64, image built in
emulation). Skipped with a reason where no qemu-aarch64 binfmt handler is registered
(scripts/setup.sh registers one when REPROCHECK_WITH_ARM64=1, as the CI does)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT
from test_workflows import example_project, load_json, ok, reprocheck

pytestmark = pytest.mark.docker
HANDLER = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@pytest.fixture(scope="module")
def arm64_run(docker_engine: Any, debian_bases: Any, tmp_path_factory: Any) -> dict[str, Any]:
    if not HANDLER.is_file():
        pytest.skip("no qemu-aarch64 binfmt handler (apt-get install qemu-user-static)")
    root = example_project(tmp_path_factory.mktemp("arm64") / "project")
    shutil.copy2(REPO_ROOT / "reprocheck-arm64.toml", root / "reprocheck-arm64.toml")
    shutil.copytree(REPO_ROOT / "images", root / "images", dirs_exist_ok=True)
    ok(reprocheck(root, "run", "--config", "reprocheck-arm64.toml", "--json", "r.json"), 1)
    return load_json(root / "r.json")


def _env(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in report["environments"] if e["name"] == name)


def test_arm64_environment_really_runs_aarch64(arm64_run: dict[str, Any]) -> None:
    native, arm = _env(arm64_run, "bookworm"), _env(arm64_run, "bookworm-arm64")
    assert native["status"] == arm["status"] == "ok"
    assert native["fingerprint"]["machine"] == "x86_64"
    assert arm["fingerprint"]["machine"] == "aarch64"
    # The same release on both sides: what drifts comes from the architecture's builds.
    for key in ("glibc", "python", "numpy", "cv2"):
        assert native["fingerprint"][key] == arm["fingerprint"][key]


def test_architecture_drift_is_reported_where_it_happens(arm64_run: dict[str, Any]) -> None:
    verdicts = {c["output"]: c["verdict"] for c in arm64_run["comparisons"]}
    # libjpeg-turbo decodes bit-exactly on both architectures ...
    assert verdicts["photo_baseline.jpg/decode/pixels"] == "identical"
    # ... while compiled floating point (FMA contraction, NEON paths) differs somewhere.
    drifting = {name.split("/", 1)[1] for name, v in verdicts.items() if v == "drift"}
    assert drifting & {"linalg/svd", "linalg/eigh", "libm/transcendental", "dnn/probabilities"}


def test_an_arm64_image_runs_as_another_arm64_cpu(
    docker_engine: Any, debian_bases: Any, tmp_path: Path
) -> None:
    """``cpu = "cortex-a53"`` on an arm64 image without a platform: the model is one only
    qemu-aarch64 knows, so the harness re-runs itself under it (not under qemu-x86_64)."""
    if not HANDLER.is_file():
        pytest.skip("no qemu-aarch64 binfmt handler (apt-get install qemu-user-static)")
    root = example_project(tmp_path / "project")
    shutil.copy2(REPO_ROOT / "reprocheck-arm64.toml", root / "reprocheck-arm64.toml")
    shutil.copytree(REPO_ROOT / "images", root / "images", dirs_exist_ok=True)
    done = reprocheck(root, "run", "--config", "reprocheck-arm64.toml", "--env", "bookworm-arm64",
                      "--cpus", "native,cortex-a53", "--json", "r.json")  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = load_json(root / "r.json")
    arm, a53 = _env(report, "bookworm-arm64"), _env(report, "bookworm-arm64@cortex-a53")
    assert arm["status"] == a53["status"] == "ok"
    assert a53["fingerprint"]["machine"] == "aarch64"
    assert a53["fingerprint"]["cpu_model"] == "cortex-a53 (qemu-user -cpu cortex-a53)"
    assert arm["fingerprint"]["cpu_model"] != a53["fingerprint"]["cpu_model"]
    # Measured: Debian bookworm's arm64 builds compute the example alike on qemu's default
    # ("max") and on a Cortex-A53 (no runtime dispatch by CPU feature moves an output).
    assert {c["verdict"] for c in report["comparisons"]} == {"identical"}
