"""Command mode against a real Docker Engine (Debian bookworm image): probes recorded by the
command's own processes, a fingerprint of what those processes loaded (not the harness's), and
command arguments whose braces are left alone."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import toml_environments, write_project

from reprocheck.config import load_config
from reprocheck.outputs import index_outputs, load_output
from reprocheck.plan import make_plan
from reprocheck.run_model import EnvironmentResult
from reprocheck.runner import Runner

pytestmark = pytest.mark.docker

INPUTS = {"inputs/a.txt": "abc", "inputs/b.txt": "hello"}

# python3 -c with dict literals in its code (str.format would fail on them), numpy only, probes.
NUMPY_ONLY = """
[pipeline]
command = ["python3", "-c", '''
import json, os, sys
import numpy as np
import reprocheck_probe

inputs, outputs = sys.argv[1], sys.argv[2]
x = np.linspace(0, 1, 5)
reprocheck_probe.record("linspace", x)
metrics = {'accuracy': float(x.mean()), 'count': len(os.listdir(inputs))}
reprocheck_probe.record("accuracy", metrics['accuracy'])
with open(os.path.join(outputs, "metrics.json"), "w") as handle:
    json.dump(metrics, handle)
print({"done": True})
''', "{inputs}", "{outputs}"]

[fixtures]
path = "inputs"
"""

# A shell that starts a Python importing cv2: the libraries of a grandchild count too.
WITH_CV2 = """
[pipeline]
command = ["sh", "-c", "python3 -c 'import cv2, numpy, os, sys; numpy.save(os.path.join(sys.argv[1], \\"v.npy\\"), numpy.ones(2))' {outputs} && echo done"]

[fixtures]
path = "inputs"
"""  # noqa: E501


def _run_env(engine: Any, root: Path, config: str) -> EnvironmentResult:
    source = write_project(root, config + toml_environments("bookworm"), INPUTS)
    run_dir = root / "reports" / f"run-{uuid.uuid4().hex[:8]}"
    plan = make_plan(load_config(source), ())
    (env,) = Runner(engine, plan, run_id=run_dir.name).run(run_dir).environments
    return env


@pytest.fixture(scope="module")
def numpy_only(docker_engine: Any, debian_bases: tuple[str, ...], tmp_path_factory) -> Any:
    return _run_env(docker_engine, tmp_path_factory.mktemp("numpy") / "project", NUMPY_ONLY)


@pytest.fixture(scope="module")
def with_cv2(docker_engine: Any, debian_bases: tuple[str, ...], tmp_path_factory) -> Any:
    return _run_env(docker_engine, tmp_path_factory.mktemp("cv2") / "project", WITH_CV2)


def _values(env: EnvironmentResult) -> dict[str, np.ndarray]:
    return {name: load_output(ref) for name, ref in index_outputs(env.outputs_dir).items()}


def _opencv(libraries: list[str]) -> list[str]:
    return [p for p in libraries if "opencv" in p.lower() or Path(p).name.startswith("cv2.")]


def test_python_c_with_a_dict_literal_runs(numpy_only: EnvironmentResult) -> None:
    assert numpy_only.status == "ok", numpy_only.error
    values = _values(numpy_only)
    assert sorted(values) == ["metrics/accuracy", "metrics/count"]
    assert values["metrics/accuracy"] == 0.5
    assert values["metrics/count"] == 2
    assert "{'done': True}" in (numpy_only.meta_dir.parent / "log.txt").read_text()


def test_a_commands_probes_land_in_the_probes_folder(numpy_only: EnvironmentResult) -> None:
    assert numpy_only.status == "ok", numpy_only.error
    with np.load(numpy_only.meta_dir / "probes" / "all.npz", allow_pickle=False) as probes:
        assert probes.files == ["000:linspace", "001:accuracy"]
        np.testing.assert_array_equal(probes["000:linspace"], np.linspace(0, 1, 5))
        assert probes["001:accuracy"] == 0.5
    left = sorted(p.name for p in numpy_only.meta_dir.iterdir())
    assert left == ["fingerprint.json", "probes", "spec.json", "status.json"]


def test_the_fingerprint_has_the_commands_libraries_only(numpy_only: EnvironmentResult) -> None:
    fp = numpy_only.fingerprint
    libraries = fp["loaded_libraries"]
    assert any("_multiarray_umath" in p for p in libraries)
    assert fp["blas"]["libraries"], "numpy was imported, so its BLAS is mapped"
    assert _opencv(libraries) == []  # the pipeline never loaded cv2
    assert not any("opencv" in str(pkg) for pkg in fp["library_packages"].values())
    assert fp["numpy"]["preloaded"] is True
    # installed, where; not imported to describe it (its build cannot have moved an output)
    so = "/usr/lib/python3/dist-packages/cv2.cpython-311-x86_64-linux-gnu.so"
    assert fp["cv2"] == {"version": None, "preloaded": False, "imported": False, "file": so}
    (process,) = fp["pipeline_processes"]["listed"]
    assert process["executable"] == "/usr/bin/python3.11"
    assert "exit" in process["seen"]
    assert process["modules"]["numpy"]["version"] == "1.24.2"


def test_a_command_that_imports_cv2_shows_its_libraries(with_cv2: EnvironmentResult) -> None:
    assert with_cv2.status == "ok", with_cv2.error
    fp = with_cv2.fingerprint
    libraries = fp["loaded_libraries"]
    assert any("libopencv_core" in p for p in libraries)
    assert any(Path(p).name.startswith("cv2.") for p in libraries)
    assert fp["library_packages"][next(p for p in libraries if "libopencv_core" in p)]
    assert fp["cv2"]["preloaded"] is True
    listed = fp["pipeline_processes"]["listed"]
    executables = [Path(p["executable"]).name for p in listed]
    assert "dash" in executables and "python3.11" in executables
    python = next(p for p in listed if Path(p["executable"]).name == "python3.11")
    assert "exit" in python["seen"]
    assert python["modules"]["cv2"]["version"] == "4.6.0"
    assert not (with_cv2.meta_dir / "probes").exists()  # nothing recorded, no probes
