"""The fingerprint collected inside each warm Debian image, through the Docker SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import fingerprint_errors

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
HARNESS_DIR = REPO / "reprocheck" / "harness"

# (image, codename, glibc, python, numpy, cv2): what Debian 11, 12 and 13 ship (measured in the
# images built from images/debian-*; the packages are pinned by the Debian release).
IMAGES = [
    ("debian-bullseye", "bullseye", "2.31", "3.9.2", "1.19.5", "4.5.1"),
    ("debian-bookworm", "bookworm", "2.36", "3.11.2", "1.24.2", "4.6.0"),
    ("debian-trixie", "trixie", "2.41", "3.13.5", "2.2.4", "4.10.0"),
]

# What the harness does: the pipeline imports numpy and cv2 and computes, then
# collect() runs in the same process.
SCRIPT = (
    "import sys, json; sys.path.insert(0, '/opt/reprocheck'); "
    "import numpy, cv2; numpy.linalg.inv(numpy.eye(3)); "
    "import fingerprint; print(json.dumps(fingerprint.collect()))"
)


@pytest.fixture(scope="module")
def client(docker_client: Any, debian_bases: tuple[str, ...]) -> Any:
    """The SDK client (the shared fixture skips locally, fails under CI=true, without an engine)."""
    return docker_client


def _built(folder: str) -> str:
    """The image the repo's ``images/<folder>`` Dockerfile builds (cached by content)."""
    from reprocheck.config import load_config
    from reprocheck.engine.docker_engine import DockerEngine
    from reprocheck.images import ImageBuilder

    config = load_config(REPO / "reprocheck.toml")
    env = next(e for e in config.environments if e.image == f"images/{folder}")
    return ImageBuilder(DockerEngine.from_env(), config).resolve(env).image_id


def _run(client: Any, folder: str) -> dict[str, Any]:
    out = client.containers.run(
        _built(folder),
        ["python3", "-c", SCRIPT],
        remove=True,
        network_mode="none",
        user="65534:65534",
        read_only=True,
        volumes={str(HARNESS_DIR): {"bind": "/opt/reprocheck", "mode": "ro"}},
        stdout=True,
        stderr=False,
    )
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize(
    ("image", "codename", "glibc", "python", "numpy", "cv2"),
    IMAGES,
    ids=[row[1] for row in IMAGES],
)
def test_fingerprint_in_container(
    client: Any, image: str, codename: str, glibc: str, python: str, numpy: str, cv2: str
) -> None:
    fp = _run(client, image)
    assert fingerprint_errors(fp) == []
    assert fp["os"]["ID"] == "debian"
    assert fp["os"]["VERSION_CODENAME"] == codename
    assert fp["glibc"] == glibc
    assert fp["python"]["version"] == python
    assert fp["numpy"]["version"] == numpy
    assert fp["numpy"]["preloaded"] is True
    assert fp["cv2"]["version"] == cv2
    assert fp["cv2"]["build"]["JPEG"]
    assert fp["packages"]["dpkg"]["libc6"].startswith(glibc)
    libs = fp["loaded_libraries"]
    assert any("libopencv_core" in p for p in libs)
    assert fp["blas"]["libraries"], "numpy.linalg ran, so a BLAS/LAPACK must be mapped"
    # Everything the Debian images load comes from a Debian package.
    unowned = [p for p, pkg in fp["library_packages"].items() if pkg is None]
    assert unowned == []
    # bullseye maps libc-2.31.so, later releases libc.so.6.
    libc = next(p for p in libs if Path(p).name in ("libc.so.6", f"libc-{glibc}.so"))
    assert fp["library_packages"][libc] == "libc6"
