"""The fingerprint collected inside each warm Debian image, through the Docker SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

HARNESS_DIR = Path(__file__).resolve().parents[2] / "reprocheck" / "harness"

# (image, codename, glibc, python, numpy, cv2) as recorded in /work/shared/FACTS.md.
IMAGES = [
    ("reprocheck-warm/bullseye", "bullseye", "2.31", "3.9.2", "1.19.5", "4.5.1"),
    ("reprocheck-warm/bookworm", "bookworm", "2.36", "3.11.2", "1.24.2", "4.6.0"),
    ("reprocheck-warm/trixie", "trixie", "2.41", "3.13.5", "2.2.4", "4.10.0"),
]

# What the harness does: the pipeline imports numpy and cv2 and computes, then
# collect() runs in the same process.
SCRIPT = (
    "import sys, json; sys.path.insert(0, '/opt/reprocheck'); "
    "import numpy, cv2; numpy.linalg.inv(numpy.eye(3)); "
    "import fingerprint; print(json.dumps(fingerprint.collect()))"
)


def _errors(value: Any, path: str = "") -> list[str]:
    if isinstance(value, str):
        return [f"{path}: {value}"] if value.startswith("error:") else []
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _errors(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _errors(v, f"{path}/{i}")]
    return []


@pytest.fixture(scope="module")
def client() -> Any:
    docker = pytest.importorskip("docker")
    try:
        c = docker.from_env()
        c.ping()
    except Exception as exc:
        pytest.skip(f"no Docker Engine: {exc}")
    return c


def _run(client: Any, image: str) -> dict[str, Any]:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.skip(f"image {image} not present")
    out = client.containers.run(
        image,
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
    assert _errors(fp) == []
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
