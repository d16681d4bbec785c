"""The in-container environment fingerprint, run on the host interpreter."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import pytest
from support import fingerprint_errors

from reprocheck.harness import fingerprint

TOP_LEVEL_KEYS = {
    "os",
    "kernel",
    "machine",
    "glibc",
    "python",
    "numpy",
    "cv2",
    "cpu",
    "loaded_libraries",
    "packages",
    "library_packages",
    "env",
    "blas",
    "modules",
}


@pytest.fixture(scope="module")
def fp() -> dict[str, Any]:
    import numpy  # noqa: F401  (the harness runs after the pipeline imported it)

    with contextlib.suppress(ImportError):
        import cv2  # noqa: F401  (described in full only when the pipeline imported it)
    return fingerprint.collect()


def test_keys_and_json_round_trip(fp: dict[str, Any]) -> None:
    assert set(fp) == TOP_LEVEL_KEYS
    assert json.loads(json.dumps(fp)) == fp


def test_no_probe_failed_on_host(fp: dict[str, Any]) -> None:
    assert fingerprint_errors(fp) == []


def test_os_kernel_machine_glibc_python(fp: dict[str, Any]) -> None:
    assert fp["os"]["ID"]
    assert "VERSION_CODENAME" in fp["os"] or "VERSION_ID" in fp["os"]
    assert fp["kernel"]["release"] == platform.release()
    assert fp["machine"] == platform.machine()
    assert fp["glibc"] == os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
    assert fp["python"]["version"] == platform.python_version()
    assert fp["python"]["executable"] == sys.executable


def test_numpy_section(fp: dict[str, Any]) -> None:
    import numpy

    section = fp["numpy"]
    assert section["version"] == numpy.__version__
    assert section["preloaded"] is True
    assert isinstance(section["config"], dict)
    assert set(section["simd"]) >= {"baseline", "found", "not_found"}
    assert "SSE2" in section["simd"]["found"] or platform.machine() != "x86_64"


def test_cv2_section_matches_module(fp: dict[str, Any]) -> None:
    cv2 = pytest.importorskip("cv2")
    section = fp["cv2"]
    assert section["version"] == cv2.__version__
    assert section["build_information"] == cv2.getBuildInformation()
    assert section["build"]["JPEG"]
    assert "Parallel framework" in section["build"]
    assert isinstance(section["threads"], int)
    assert isinstance(section["cpu_features"], dict)


def test_cpu_libraries_packages(fp: dict[str, Any]) -> None:
    assert fp["cpu"]["count"] == os.cpu_count()
    assert fp["cpu"]["affinity"] == len(os.sched_getaffinity(0))
    assert fp["cpu"]["flags"] == sorted(fp["cpu"]["flags"])
    libs = fp["loaded_libraries"]
    assert libs == sorted(set(libs))
    assert any("libc.so" in p for p in libs)
    assert set(fp["library_packages"]) == set(libs)
    if Path("/var/lib/dpkg/info").is_dir():
        libc = next(p for p in libs if Path(p).name == "libc.so.6")
        assert fp["library_packages"][libc] == "libc6"
        assert "libc6" in fp["packages"]["dpkg"]
        assert not any(":" in name for name in fp["packages"]["dpkg"])
    assert fp["packages"]["pip"]["numpy"]


def test_env_keeps_only_numeric_steering_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("OPENCV_IO_ENABLE_OPENEXR", "1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("REPROCHECK_UNRELATED", "x")
    env = fingerprint.probe_env()
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["OPENCV_IO_ENABLE_OPENEXR"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert "REPROCHECK_UNRELATED" not in env


def test_failing_probe_becomes_error_string(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(fingerprint, "probe_loaded_libraries", boom)
    monkeypatch.setattr(fingerprint, "probe_os", boom)
    fp = fingerprint.collect()
    assert fp["loaded_libraries"] == "error: OSError: no /proc here"
    assert fp["os"].startswith("error: OSError")
    assert fp["library_packages"] == {}
    assert isinstance(fp["glibc"], str) and not fp["glibc"].startswith("error")


def test_missing_numpy_and_cv2_give_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint, "_import", lambda name: None)
    fp = fingerprint.collect()
    assert fp["numpy"] is None
    assert fp["cv2"] is None
    assert fp["blas"]["numpy_config"] is None


def test_extra_modules() -> None:
    fp = fingerprint.collect(["json", "no_such_module_xyz"])
    assert fp["modules"]["json"]["file"]
    assert fp["modules"]["no_such_module_xyz"].startswith("error: ModuleNotFoundError")


def test_parse_os_release_quoting() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n# comment\nVERSION_ID="12"\n'
    assert fingerprint._parse_os_release(text) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "ID": "debian",
        "VERSION_ID": "12",
    }


def test_parse_cv2_build_information_nesting() -> None:
    text = (
        "\nGeneral configuration for OpenCV 4.6.0 =====\n"
        "  CPU/HW features:\n"
        "    Baseline:                    SSE SSE2\n"
        "      requested:                 SSE3\n"
        "  Media I/O: \n"
        "    JPEG:                        /usr/lib/x86_64-linux-gnu/libjpeg.so (ver 62)\n"
        "  Parallel framework:            TBB (ver 2021.8 interface 12080)\n"
        "  Python 3:\n"
        "    numpy:                       /usr/include (ver 1.24.2)\n"
    )
    flat = fingerprint.parse_cv2_build_information(text)
    assert flat["CPU/HW features/Baseline/requested"] == "SSE3"
    build = fingerprint._pick_cv2_build(flat)
    assert build == {
        "Baseline": "SSE SSE2",
        "JPEG": "/usr/lib/x86_64-linux-gnu/libjpeg.so (ver 62)",
        "Parallel framework": "TBB (ver 2021.8 interface 12080)",
        "Python 3 numpy": "/usr/include (ver 1.24.2)",
    }


def test_parse_maps_keeps_shared_objects_only() -> None:
    maps = (
        "7f00-7f01 r--p 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libm.so.6\n"
        "7f01-7f02 r-xp 00001000 08:01 1 /usr/lib/x86_64-linux-gnu/libm.so.6\n"
        "7f02-7f03 r--p 00000000 08:01 2 /tmp/libfoo.so (deleted)\n"
        "7f03-7f04 r--p 00000000 08:01 3 /usr/lib/locale/C.utf8/LC_CTYPE\n"
        "7f04-7f05 rw-p 00000000 00:00 0 [heap]\n"
        "7f05-7f06 rw-p 00000000 00:00 0\n"
    )
    assert fingerprint.parse_maps(maps) == ["/tmp/libfoo.so", "/usr/lib/x86_64-linux-gnu/libm.so.6"]


def test_usr_merge_variants() -> None:
    variants = fingerprint.path_variants("/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert "/lib/x86_64-linux-gnu/libc.so.6" in variants
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" in variants
    assert fingerprint._usr_merge_variant("/usr/share/foo.so") is None
    assert fingerprint._usr_merge_variant("/lib64/ld.so") == "/usr/lib64/ld.so"
