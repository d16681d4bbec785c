"""The data plane of engines on another machine, on real engines: the second Docker daemon
over ssh and Podman (the fixtures of remote_engines.py), with an image of the repo's that
reached them through the registry by digest.

Read-only mounts are host folders that must arrive in content-addressed volumes (reused
while unchanged), writable mounts come back through the API, and the hermetic settings hold
there. Podman runs each test twice: as a Podman on another machine would (volumes,
``local=False``) and as the local socket it is (bind mounts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from remote_engines import MEASURED, PROBE_PRELUDE, example_image, load_image, probe_spec

from reprocheck.engine.base import ContainerSpec, Mount
from reprocheck.engine.targets import EngineTarget, connect_target
from reprocheck.engine.transfer import VOLUME_LABEL
from reprocheck.errors import EngineError

pytestmark = pytest.mark.docker

IMAGE = "bookworm-pip"  # the example's smallest image with python3 (about 580 MB)
VOLUME_CASES = ("docker-over-ssh", "podman-volumes")
ALL_CASES = (*VOLUME_CASES, "podman-local")

# What the container does: report what it sees, write outputs (files, a nested folder,
# links inside and outside the folder), then hash its outputs as the harness does.
PROBE = (
    PROBE_PRELUDE
    + r"""
import errno, socket, sys
FOLDERS = False

def error_of(action):
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "none"

def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return line.split()[1]

def cgroup(*names):
    for name in names:
        try:
            with open("/sys/fs/cgroup/" + name) as handle:
                return handle.read().strip()
        except OSError:
            pass
    return None

def touch(path):
    return lambda: open(path, "w").close()

def connect():
    with socket.create_connection(("1.1.1.1", 53), timeout=2):
        pass

facts = {
    "uid": os.getuid(), "gid": os.getgid(),
    "write_root": error_of(touch("/probe")),
    "write_project": error_of(touch("/project/probe")),
    "write_tmp": error_of(touch("/tmp/probe")),
    "network": sorted(os.listdir("/sys/class/net")),
    "connect": error_of(connect),
    "cap_eff": status("CapEff"), "no_new_privs": status("NoNewPrivs"),
    "pids_max": cgroup("pids/pids.max", "pids.max"),
    "memory_max": cgroup("memory/memory.limit_in_bytes", "memory.max"),
}
inputs = {}
for root in ("/project", "/fixtures", "/run/reprocheck"):
    inputs.update(seen(root))
with open("/out/spec.json") as handle:
    spec = json.load(handle)
os.makedirs("/out/result/nested/deeper")
with open("/out/result/nested/deeper/copy.bin", "wb") as handle:
    with open("/fixtures/" + spec["copy"], "rb") as source:
        handle.write(source.read())
with open("/out/result/facts.json", "w") as handle:
    json.dump({"facts": facts, "inputs": inputs, "spec": spec}, handle)
os.symlink("/etc/passwd", "/out/leak")  # absolute, out of the folder
os.symlink("../../../etc/passwd", "/out/result/up")  # relative, out of the folder
os.symlink("nested/deeper/copy.bin", "/out/result/inside")  # stays inside: kept
manifest = os.environ.get("REPROCHECK_TRANSFER_MANIFEST")
if manifest:
    files = {}
    for root in os.environ["REPROCHECK_TRANSFER_ROOTS"].split(":"):
        for path in seen(root):
            if not os.path.islink(path) and os.path.isfile(path) and path != manifest:
                files[path] = sha(path)
    if spec.get("lie"):  # a copy that changed on the way must be caught
        files["/out/result/nested/deeper/copy.bin"] = "0" * 64
    with open(manifest, "w") as handle:
        json.dump({"files": files}, handle)
"""
)


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    engine: Any  # DockerEngine
    image: str  # by digest, pulled through the registry
    client: Any  # the raw SDK client of the same engine, for volume listings


@pytest.fixture(scope="module", params=ALL_CASES)
def case(request: pytest.FixtureRequest, registry: str) -> Iterator[Case]:
    import docker

    from reprocheck.engine.docker_engine import DockerEngine

    local_ref = example_image(IMAGE)
    if request.param == "docker-over-ssh":
        daemon = request.getfixturevalue("second_daemon")
        host = request.getfixturevalue("ssh_docker_host")
        image = load_image(registry, local_ref, host)  # through ssh too
        engine = connect_target(EngineTarget(host=host))
        assert not engine.local
        assert engine.host_info()["id"] == daemon.id  # not the first daemon
        client = docker.DockerClient(base_url=daemon.socket)
    else:
        host = request.getfixturevalue("podman_host")
        image = load_image(registry, local_ref, host)
        client = docker.DockerClient(base_url=host)
        if request.param == "podman-local":
            engine = connect_target(EngineTarget(kind="podman", host=host))
            assert engine.local
        else:  # a Podman on another machine: the same API, no shared files
            engine = DockerEngine(client, name="podman", where=f"podman at {host}", local=False)
    yield Case(name=request.param, engine=engine, image=image, client=client)
    engine._client.close()  # its ssh processes end before the session's sshd does
    client.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _project(root: Path, nonce: str, *, fixtures: dict[str, bytes] | None = None) -> dict:
    """A project folder, fixtures, a single file (the CA bundle's mount) and an output
    folder seeded with spec.json; the Mounts of it."""
    files = {
        "project/p.py": f"# {nonce}\n".encode(),
        "project/data/in.bin": os.urandom(4096),
        "project/reports/secret.txt": b"a stored run: masked, never copied\n",
        "fixtures/a.bin": b"a" * 1000,
        "fixtures/sub/b.bin": nonce.encode(),
        "ca.crt": b"-----BEGIN CERTIFICATE-----\n" + nonce.encode() + b"\n",
        **{f"fixtures/{name}": data for name, data in (fixtures or {}).items()},
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "project/passwd").symlink_to("/etc/passwd")  # the host's: must not be read
    out = root / "out"
    out.mkdir()
    out.chmod(0o777)  # as the runner does: the container's user writes there (bind mounts)
    mounts = (
        Mount(source=root / "project", target="/project"),
        Mount(source=root / "fixtures", target="/fixtures"),
        Mount(source=root / "ca.crt", target="/run/reprocheck/host-ca.crt"),
        Mount(source=out, target="/out", read_only=False),
    )
    return {"files": files, "mounts": mounts, "out": out}


def _spec(case: Case, project: dict, **spec: Any) -> ContainerSpec:
    """The probe's run; its output folder fresh, seeded with spec.json (as the runner's)."""
    shutil.rmtree(project["out"])
    project["out"].mkdir()
    project["out"].chmod(0o777)
    (project["out"] / "spec.json").write_text(json.dumps({"copy": "a.bin", **spec}))
    return probe_spec(case.image, PROBE, project["mounts"], masked=("/project/reports",))


def _run(case: Case, spec: ContainerSpec) -> Any:
    outcome = case.engine.run(spec)
    assert outcome.exit_code == 0, outcome.log
    return outcome


def _report(out: Path) -> dict:
    return json.loads((out / "result/facts.json").read_text())


def _input_volumes(case: Case) -> set[str]:
    found = case.client.volumes.list(filters={"label": f"{VOLUME_LABEL}=input"})
    return {volume.name for volume in found}


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("case", ALL_CASES, indirect=True)
def test_inputs_arrive_and_outputs_come_back(case: Case, tmp_path: Path) -> None:
    project = _project(tmp_path, uuid.uuid4().hex)
    outcome = _run(case, _spec(case, project))
    out, files = project["out"], project["files"]
    report = _report(out)
    assert report["spec"]["copy"] == "a.bin"  # the seeded spec.json went in
    assert (out / "result/nested/deeper/copy.bin").read_bytes() == files["fixtures/a.bin"]
    inputs = report["inputs"]
    for rel in ("project/p.py", "project/data/in.bin", "fixtures/a.bin", "fixtures/sub/b.bin"):
        assert inputs[f"/{rel}"] == _sha(files[rel]), rel
    assert inputs["/run/reprocheck/host-ca.crt"] == _sha(files["ca.crt"])  # a single file
    assert inputs["/project/passwd"] == "link:/etc/passwd"  # a link, not the host's file
    assert not any(path.startswith("/project/reports/") for path in inputs)  # masked
    if not case.engine.local:
        figures = outcome.transfer
        assert figures["inputs_copied"] + figures["inputs_reused"] == 3  # 2 folders, /run/...
        assert figures["verified_out"] is True  # against the container's own hashes
        assert figures["files_out"] >= 3


@pytest.mark.parametrize("case", ALL_CASES, indirect=True)
def test_hermetic_settings_hold_there(case: Case, tmp_path: Path) -> None:
    project = _project(tmp_path, uuid.uuid4().hex)
    _run(case, _spec(case, project))
    facts = _report(project["out"])["facts"]
    assert (facts["uid"], facts["gid"]) == (65534, 65534)
    assert facts["write_root"] == "EROFS"  # read-only root
    assert facts["write_project"] == "EROFS"  # read-only input volume / bind mount
    assert facts["write_tmp"] == "none"  # the tmpfs
    assert facts["network"] == ["lo"]
    assert facts["connect"] in ("ENETUNREACH", "EHOSTUNREACH", "ENETDOWN")
    assert int(facts["cap_eff"], 16) == 0  # every capability dropped
    assert facts["no_new_privs"] == "1"
    assert facts["pids_max"] == "256"
    assert int(facts["memory_max"]) == 1 << 30


@pytest.mark.parametrize("case", VOLUME_CASES, indirect=True)
def test_links_out_of_the_output_folder_stay_on_the_engine(case: Case, tmp_path: Path) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    project = _project(tmp_path, uuid.uuid4().hex)
    _run(case, _spec(case, project))
    out = project["out"].resolve()
    assert not (out / "leak").is_symlink() and not (out / "leak").exists()
    assert not (out / "result/up").is_symlink() and not (out / "result/up").exists()
    assert (out / "result/inside").is_symlink()  # a link inside the folder is kept
    for path in out.rglob("*"):
        if path.is_symlink():
            assert path.resolve().is_relative_to(out), path
        elif path.is_file():
            assert path.read_bytes() != passwd, path
    assert Path("/etc/passwd").read_bytes() == passwd


@pytest.mark.parametrize("case", VOLUME_CASES, indirect=True)
def test_a_copy_that_differs_from_the_containers_hashes_fails(case: Case, tmp_path: Path) -> None:
    project = _project(tmp_path, uuid.uuid4().hex)
    with pytest.raises(EngineError, match="differ after the copy"):
        case.engine.run(_spec(case, project, lie=True))


@pytest.mark.parametrize("case", VOLUME_CASES, indirect=True)
def test_inputs_are_copied_once_and_again_when_they_change(case: Case, tmp_path: Path) -> None:
    """Content-addressed volumes: the first run copies, the second reuses them all, a
    changed fixture makes one new volume (the other two are reused); timed for the record."""
    big = {f"big/{i:02d}.bin": os.urandom(1 << 20) for i in range(32)}  # 32 MiB of fixtures
    project = _project(tmp_path, uuid.uuid4().hex, fixtures=big)
    before = _input_volumes(case)
    started = time.monotonic()
    first = _run(case, _spec(case, project)).transfer
    first_seconds = time.monotonic() - started
    assert (first["inputs_copied"], first["inputs_reused"]) == (3, 0), first
    assert first["bytes_copied"] > 32 << 20
    made = _input_volumes(case) - before
    assert len(made) == 3, made

    started = time.monotonic()
    again = _run(case, _spec(case, project)).transfer
    again_seconds = time.monotonic() - started
    assert (again["inputs_copied"], again["inputs_reused"], again["bytes_copied"]) == (0, 3, 0)
    assert _input_volumes(case) - before == made

    (tmp_path / "fixtures/a.bin").write_bytes(b"b" * 1000)
    changed = _run(case, _spec(case, project))
    figures = changed.transfer
    assert (figures["inputs_copied"], figures["inputs_reused"]) == (1, 2), figures
    assert len(_input_volumes(case) - before - made) == 1
    copied = (project["out"] / "result/nested/deeper/copy.bin").read_bytes()
    assert copied == b"b" * 1000  # the run saw the new content, not the old volume's
    for when, seconds, figures in (
        ("first", first_seconds, first),
        ("repeated", again_seconds, again),
    ):
        MEASURED[f"{case.name}, 32 MiB of fixtures, {when} run"] = (
            f"{seconds:.2f} s in all; copy in {figures['copy_in_seconds']:.2f} s, "
            f"out {figures['copy_out_seconds']:.2f} s ({figures['bytes_copied']} bytes copied)"
        )


@pytest.mark.parametrize("case", VOLUME_CASES, indirect=True)
def test_an_input_volume_removed_on_the_engine_is_made_again(case: Case, tmp_path: Path) -> None:
    """Its readiness marker alone must not stand for it: an engine would otherwise mount
    a new, empty volume of that name, and the pipeline would see no fixtures."""
    project = _project(tmp_path, uuid.uuid4().hex)
    before = _input_volumes(case)
    _run(case, _spec(case, project))
    for name in _input_volumes(case) - before:
        case.client.volumes.get(name).remove()
    again = _run(case, _spec(case, project))
    assert again.transfer["inputs_copied"] == 3, again.transfer
    inputs = _report(project["out"])["inputs"]
    assert inputs["/fixtures/a.bin"] == _sha(project["files"]["fixtures/a.bin"])
