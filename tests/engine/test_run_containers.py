"""The runner against a real Docker Engine: tiny pipelines in tmp projects, the repo's images.

Each test writes its own project; the images come from images/debian-* (built once, then
found in the layer cache by their content digest).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import DEBIAN_ENVS, DEBIAN_FACTS, debian_image, toml_environments, write_project

from reprocheck.config import RunConfig, load_config
from reprocheck.engine import LABEL, BuildRequest
from reprocheck.images import ImageBuilder
from reprocheck.outputs import index_outputs, load_output
from reprocheck.plan import make_plan
from reprocheck.run_model import EnvironmentResult, RunResult
from reprocheck.runner import Runner

pytestmark = pytest.mark.docker

CALLABLE = """
[pipeline]
callable = "pipelines/p.py:run"

[fixtures]
path = "inputs"
"""

INPUTS = {"inputs/a.txt": "abc", "inputs/sub/b.txt": "hello"}


def _run(engine: Any, source: Path, *envs: str) -> RunResult:
    config = load_config(source)
    run_dir = source.parent / "reports" / f"run-{uuid.uuid4().hex[:8]}"
    return Runner(engine, make_plan(config, envs), run_id=run_dir.name).run(run_dir)


def _env(result: RunResult, name: str) -> EnvironmentResult:
    (env,) = [e for e in result.environments if e.name == name]
    return env


def _values(env: EnvironmentResult) -> dict[str, np.ndarray]:
    return {name: load_output(ref) for name, ref in index_outputs(env.outputs_dir).items()}


def _leftovers(client: Any, run: RunResult) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"io.reprocheck.run={run.run_id}"})


# --- a callable in each Debian image ----------------------------------------------------------

PIPELINE = """
import numpy as np

def run(path):
    with open(path, "rb") as handle:
        data = handle.read()
    return {
        "size": len(data),
        "squares": np.arange(5, dtype=np.float64) ** 2,
        "nested": {"checksum": np.uint8(sum(data) % 256)},
    }
"""


@pytest.fixture(scope="module")
def debian_run(docker_engine: Any, debian_bases: tuple[str, ...], tmp_path_factory) -> RunResult:
    root = tmp_path_factory.mktemp("callable") / "project"  # mktemp makes 0700 folders
    source = write_project(root, CALLABLE + toml_environments(*DEBIAN_ENVS),
                           {**INPUTS, "pipelines/p.py": PIPELINE})  # fmt: skip
    return _run(docker_engine, source)


@pytest.mark.parametrize("name", DEBIAN_ENVS)
def test_callable_runs_in_each_debian_image(debian_run: RunResult, name: str) -> None:
    env = _env(debian_run, name)
    assert env.status == "ok", env.error
    assert [(f.fixture, f.status) for f in env.fixtures] == [("a.txt", "ok"), ("sub/b.txt", "ok")]
    values = _values(env)
    assert sorted(values) == [
        "a.txt/nested/checksum", "a.txt/size", "a.txt/squares",
        "sub/b.txt/nested/checksum", "sub/b.txt/size", "sub/b.txt/squares",
    ]  # fmt: skip
    assert values["a.txt/size"] == 3
    assert values["sub/b.txt/size"] == 5
    assert values["a.txt/nested/checksum"] == (97 + 98 + 99) % 256
    np.testing.assert_array_equal(values["a.txt/squares"], [0.0, 1.0, 4.0, 9.0, 16.0])
    assert env.image_id is not None and env.image_id.startswith("sha256:")


@pytest.mark.parametrize("name", DEBIAN_ENVS)
def test_fingerprint_matches_the_image(debian_run: RunResult, name: str) -> None:
    codename, glibc, python = DEBIAN_FACTS[name]
    fp = _env(debian_run, name).fingerprint
    assert fp["os"]["VERSION_CODENAME"] == codename
    assert fp["glibc"] == glibc
    assert fp["python"]["version"] == python
    assert "python3-numpy" in fp["packages"]["dpkg"]


def test_each_environment_ran_in_its_own_image(debian_run: RunResult) -> None:
    assert len({e.image_id for e in debian_run.environments}) == len(DEBIAN_ENVS)


def test_no_container_is_left_behind(debian_run: RunResult, docker_client: Any) -> None:
    assert _leftovers(docker_client, debian_run) == []


# --- command mode -----------------------------------------------------------------------------

PROBE = """
import json, os, sys
import numpy as np

inputs, outputs = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(inputs))
os.makedirs(os.path.join(outputs, "sub"))
np.savez(os.path.join(outputs, "arrays.npz"), ones=np.ones(3, dtype=np.int16), eye=np.eye(2))
np.save(os.path.join(outputs, "sub", "single.npy"), np.float32([0.5, 1.5]))
with open(os.path.join(outputs, "numbers.json"), "w") as handle:
    json.dump({"count": len(names), "half": 0.5, "label": "ignored"}, handle)
print("probe done", names)
"""


def test_command_mode_writes_npz_npy_json(docker_engine, debian_bases, make_project) -> None:
    source = make_project(
        '[pipeline]\ncommand = ["python3", "probe.py", "{inputs}", "{outputs}"]\n'
        '[fixtures]\npath = "inputs"\n' + toml_environments("bookworm"),
        {**INPUTS, "probe.py": PROBE},
    )
    env = _run(docker_engine, source).environments[0]
    assert env.status == "ok", env.error
    values = _values(env)
    assert sorted(values) == ["arrays/eye", "arrays/ones", "numbers/count", "numbers/half",
                              "sub/single"]  # fmt: skip
    assert values["arrays/ones"].dtype == np.int16
    assert values["sub/single"].dtype == np.float32
    assert values["numbers/count"] == 2  # a.txt and sub
    assert values["numbers/half"] == 0.5
    assert "probe done" in (env.meta_dir.parent / "log.txt").read_text()


def test_command_that_fails_is_an_error(docker_engine, debian_bases, make_project) -> None:
    source = make_project(
        '[pipeline]\ncommand = ["python3", "-c", "import sys; sys.exit(\'no luck\')"]\n'
        '[fixtures]\npath = "inputs"\n' + toml_environments("bookworm"),
        INPUTS,
    )
    env = _run(docker_engine, source).environments[0]
    assert env.status == "error"
    assert "command exited 1" in (env.error or "")
    assert "no luck" in (env.error or "")


# --- failures are statuses --------------------------------------------------------------------

RAISES = """
import numpy as np

def run(path):
    if path.endswith("b.txt"):
        raise ValueError("cannot handle " + path.rsplit("/", 1)[-1])
    return {"ok": np.ones(2)}
"""


def test_fixture_that_raises(docker_engine, debian_bases, make_project) -> None:
    source = make_project(CALLABLE + toml_environments("bookworm"),
                          {**INPUTS, "pipelines/p.py": RAISES})  # fmt: skip
    env = _run(docker_engine, source).environments[0]
    assert env.status == "partial"
    states = {f.fixture: f for f in env.fixtures}
    assert states["a.txt"].status == "ok"
    assert states["sub/b.txt"].status == "error"
    error = states["sub/b.txt"].error or ""
    assert "Traceback" in error
    assert error.strip().endswith("ValueError: cannot handle b.txt")
    assert sorted(_values(env)) == ["a.txt/ok"]


SLEEPS = """
import time

def run(path):
    time.sleep(120)
    return {"never": 0}
"""


def test_timeout_kills_and_removes_the_container(
    docker_engine, debian_bases, docker_client, make_project
) -> None:
    source = make_project(CALLABLE + "[run]\ntimeout = 3\n" + toml_environments("bookworm"),
                          {**INPUTS, "pipelines/p.py": SLEEPS})  # fmt: skip
    result = _run(docker_engine, source)
    env = result.environments[0]
    assert env.status == "timeout"
    assert "timed out" in (env.error or "")
    assert env.fixtures[0].status == "running"  # the harness saved its progress as it went
    assert _leftovers(docker_client, result) == []


GREEDY = """
import numpy as np

def run(path):
    block = np.ones(500 * 1024 * 1024 // 8)  # 500 MB, every page written
    return {"sum": block.sum()}
"""


def test_out_of_memory(docker_engine, debian_bases, docker_client, make_project) -> None:
    source = make_project(CALLABLE + '[run]\nmemory = "64m"\n' + toml_environments("bookworm"),
                          {**INPUTS, "pipelines/p.py": GREEDY})  # fmt: skip
    result = _run(docker_engine, source)
    env = result.environments[0]
    assert env.status == "oom", (env.status, env.error)
    assert "out of memory" in (env.error or "")
    assert _leftovers(docker_client, result) == []


# --- hardening, seen from inside --------------------------------------------------------------

HARDENING = """
import os

def _writable(path):
    try:
        with open(path, "w") as handle:
            handle.write("x")
    except OSError:
        return 0
    return 1

def _status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16 if field == "CapEff" else 10)
    return -1

def run(path):
    with open("/proc/net/dev") as handle:
        interfaces = [line.split(":")[0].strip() for line in handle.readlines()[2:]]
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "non_lo_interfaces": len([i for i in interfaces if i != "lo"]),
        "has_lo": int("lo" in interfaces),
        "usr_writable": _writable("/usr/reprocheck-probe"),
        "root_writable": _writable("/reprocheck-probe"),
        "project_writable": _writable("/project/reprocheck-probe"),
        "fixtures_writable": _writable("/fixtures/reprocheck-probe"),
        "harness_writable": _writable("/opt/reprocheck/reprocheck-probe"),
        "out_writable": _writable("/out/reprocheck-probe"),
        "tmp_writable": _writable("/tmp/reprocheck-probe"),
        "cap_eff": _status("CapEff"),
        "no_new_privs": _status("NoNewPrivs"),
    }
"""


def test_container_is_hardened(docker_engine, debian_bases, make_project) -> None:
    source = make_project(
        CALLABLE + 'include = ["a.txt"]\n' + toml_environments("bookworm"),
        {**INPUTS, "pipelines/p.py": HARDENING},
    )
    env = _run(docker_engine, source).environments[0]
    assert env.status == "ok", env.error
    seen = {name.removeprefix("a.txt/"): int(v) for name, v in _values(env).items()
            if name.startswith("a.txt/")}  # fmt: skip
    assert seen["uid"] != 0
    assert seen["gid"] != 0
    assert seen["non_lo_interfaces"] == 0
    assert seen["has_lo"] == 1
    assert seen["usr_writable"] == 0
    assert seen["root_writable"] == 0
    assert seen["project_writable"] == 0
    assert seen["fixtures_writable"] == 0
    assert seen["harness_writable"] == 0
    assert seen["cap_eff"] == 0
    assert seen["no_new_privs"] == 1
    # the writable places still work, or the probes above prove nothing
    assert seen["out_writable"] == 1
    assert seen["tmp_writable"] == 1
    assert not (source.parent / "reprocheck-probe").exists()


# --- images -----------------------------------------------------------------------------------

BROKEN = """
FROM debian:bookworm
RUN echo reprocheck-before-failure
RUN echo reprocheck-about-to-fail && false
RUN echo never
"""


def test_failing_dockerfile_step(docker_engine, debian_bases, make_project) -> None:
    def image(name: str) -> str:
        return "images/broken" if name == "broken" else debian_image(name)

    source = make_project(
        CALLABLE + toml_environments("broken", "bookworm", image=image),
        {**INPUTS, "pipelines/p.py": PIPELINE, "images/broken/Dockerfile": BROKEN},
    )
    result = _run(docker_engine, source)
    broken, good = result.environments
    assert broken.status == "error"
    message = broken.error or ""
    assert "RUN echo reprocheck-about-to-fail && false" in message  # the failing step
    assert "returned a non-zero code: 1" in message
    assert "reprocheck-about-to-fail" in message.split("log tail:")[-1]
    assert "images/broken/Dockerfile" in message
    assert broken.image_id is None
    assert good.status == "ok", good.error


def _cache_project(make_project) -> RunConfig:
    marker = uuid.uuid4().hex  # a fresh image for every test run
    source = make_project(
        CALLABLE + toml_environments("cached", image=lambda _n: "images/cached"),
        {"inputs/a.txt": "", "images/cached/Dockerfile":
         f"FROM debian:bookworm\nRUN echo {marker} > /marker\n"},
    )  # fmt: skip
    return load_config(source)


def test_layer_cache(docker_engine, debian_bases, docker_client, make_project) -> None:
    config = _cache_project(make_project)
    env = config.environments[0]
    first = ImageBuilder(docker_engine, config).resolve(env)
    second = ImageBuilder(docker_engine, config).resolve(env)
    try:
        assert first.image_id == second.image_id
        assert first.ref == second.ref
        info = docker_engine.image(first.ref)
        assert info.labels[LABEL] == "1"
        # Under another tag the engine's own layer cache gives the very same layers.
        lines: list[str] = []
        request = BuildRequest(context_tar=_context(config), tag=f"{first.ref}-again")
        again = docker_engine.build(request, lines.append)
        assert any("Using cache" in line for line in lines), lines
        base = docker_client.images.get(first.image_id).attrs["RootFS"]["Layers"]
        assert docker_client.images.get(again.id).attrs["RootFS"]["Layers"] == base
    finally:
        for tag in (first.ref, f"{first.ref}-again"):
            docker_client.images.remove(tag, force=True)


def _context(config: RunConfig) -> Path:
    import tarfile

    folder = config.root / "images" / "cached"
    tarball = config.root / "context.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(folder / "Dockerfile", arcname="Dockerfile")
    return tarball
