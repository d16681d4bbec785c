"""Hostile files through the data plane of engines on another machine (engine/transfer.py),
on real engines: odd names in and out, special files and links a pipeline leaves in its
output folders, links in the project to host files, and a manifest the pipeline spoiled.

Each case runs as the runner lays mounts out (/project, /fixtures and the harness read-only;
/out and /meta writable, spec.json seeded in /meta) and ends as the harness does: it hashes
what it left (``write_transfer_manifest`` of harness/run.py, the real one, mounted). The host
must never fail with anything but a one-line :class:`EngineError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from remote_engines import PROBE_PRELUDE, example_image, load_image, probe_spec

from reprocheck.engine.base import ContainerSpec, Mount
from reprocheck.engine.targets import EngineTarget, connect_target
from reprocheck.errors import EngineError

pytestmark = pytest.mark.docker

IMAGE = "bookworm-pip"
HARNESS = Path(__file__).resolve().parents[2] / "reprocheck" / "harness"
VOLUME_CASES = ("docker-over-ssh", "podman-volumes")
ALL_CASES = (*VOLUME_CASES, "podman-local")

# Names a fixture or an output may have on Linux: all but "/" and NUL.
NAMES = (
    "with space.bin",
    "new\nline.bin",
    "tab\tand\rreturn",
    "quote'single",
    'quote"double',
    "-leading-dash",
    "--help",
    " ",
    "...",
    ".hidden",
    "back\\slash",
    "star*?[x]{a,b}",
    "colon:name;semi|pipe&$(x)`y`",
    "ünïcödé-日本語-🙂.bin",
    os.fsdecode(b"undecodable-\xff\xfe\x80.bin"),  # surrogate escapes
    os.fsdecode(b"latin1-caf\xe9"),
    "x" * 255,  # NAME_MAX
    "ä" * 127,  # 254 bytes
)
DEEP = os.path.join(*[f"{i:02d}" + "d" * 58 for i in range(40)])  # 2,440 bytes deep

# The container's side: what the pipeline does (spec.json's "scenario"), then the harness's
# own hashes of what it left, as harness/run.py main() does after the pipeline.
PROBE = (
    PROBE_PRELUDE
    + r"""
import contextlib, socket, stat, sys
FOLDERS = True

def attempt(action):
    try:
        return action()
    except OSError as exc:
        return "error:" + type(exc).__name__

with open("/meta/spec.json") as handle:
    spec = json.load(handle)
scenario = spec["scenario"]
report = {}
if scenario == "mirror":  # inputs seen, and copied into the outputs under the same names
    report["inputs"] = seen("/fixtures")
    for folder, dirs, files in os.walk("/fixtures"):
        rel = os.path.relpath(folder, "/fixtures")
        os.makedirs(os.path.join("/out/mirror", rel), exist_ok=True)
        for name in files:
            with open(os.path.join(folder, name), "rb") as src:
                with open(os.path.join("/out/mirror", rel, name), "wb") as dst:
                    dst.write(src.read())
elif scenario == "links":  # what the project's links to host files show here
    for name in ("shadow", "outside-abs", "outside-rel", "inside"):
        path = "/project/" + name
        report[name] = {
            "link": attempt(lambda: os.readlink(path)),
            "content": attempt(lambda: sha(path)),
        }
elif scenario == "special":
    with open("/out/plain.txt", "w") as handle:
        handle.write("plain\n")
    with open("/out/locked.txt", "w") as handle:
        handle.write("nobody reads me\n")
    os.chmod("/out/locked.txt", 0)
    os.makedirs("/out/locked-dir/inner")
    with open("/out/locked-dir/inner/file.txt", "w") as handle:
        handle.write("behind a locked folder\n")
    os.chmod("/out/locked-dir", 0)
    os.mkfifo("/out/fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind("/out/socket")
    os.symlink("loop-b", "/out/loop-a")
    os.symlink("loop-a", "/out/loop-b")
    os.symlink("self", "/out/self")
    os.symlink(".", "/out/dot")
    os.symlink("dot/dot/dot/plain.txt", "/out/through-dots")
    os.link("/out/plain.txt", "/out/hardlink.txt")
    os.makedirs("/out/empty-dir")
    open("/out/empty.bin", "w").close()
    with open("/out/out", "w") as handle:  # named as the folder itself
        handle.write("out\n")
    os.makedirs("/meta/meta/meta")
    os.remove("/meta/spec.json")  # the seeded file: now a folder
    os.makedirs("/meta/spec.json/inner")
elif scenario == "deep-out":  # a long path, made folder by folder (PATH_MAX: 4,096)
    os.chdir("/out")
    for _ in range(spec["depth"]):
        os.mkdir("d" * 200)
        os.chdir("d" * 200)
    with open("leaf.txt", "w") as handle:
        handle.write("deep\n")
    os.chdir("/")

with open("/out/report.json", "w") as handle:
    json.dump(report, handle)
sys.path.insert(0, "/opt/reprocheck")
import run  # the harness's own manifest, as main() writes it (its failure only skips it)
with contextlib.suppress(Exception):
    run.write_transfer_manifest()
late = spec.get("manifest")  # a process of the pipeline's that outlived it, spoiling it
if late is not None:
    target = os.environ["REPROCHECK_TRANSFER_MANIFEST"]
    if late == "folder":
        os.remove(target)
        os.makedirs(target + "/x")
    elif late == "huge":
        with open(target, "w") as handle:
            handle.write('{"files": {}, "pad": "' + "x" * (80 << 20) + '"}')
    elif late == "nested":
        with open(target, "w") as handle:
            handle.write("[" * 200000)
    else:
        with open(target, "w") as handle:
            handle.write(late)
"""
)


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    engine: Any  # DockerEngine
    image: str


@pytest.fixture(scope="module", params=ALL_CASES)
def case(request: pytest.FixtureRequest, registry: str) -> Iterator[Case]:
    from reprocheck.engine.docker_engine import DockerEngine

    local_ref = example_image(IMAGE)
    if request.param == "docker-over-ssh":
        request.getfixturevalue("second_daemon")
        host = request.getfixturevalue("ssh_docker_host")
        image = load_image(registry, local_ref, host)
        engine = connect_target(EngineTarget(host=host))
        assert not engine.local
    else:
        import docker

        host = request.getfixturevalue("podman_host")
        image = load_image(registry, local_ref, host)
        if request.param == "podman-local":
            engine = connect_target(EngineTarget(kind="podman", host=host))
            assert engine.local
        else:  # a Podman on another machine: the same API, no shared files
            engine = DockerEngine(docker.DockerClient(base_url=host), name="podman",
                                  where=f"podman at {host}", local=False)  # fmt: skip
    yield Case(name=request.param, engine=engine, image=image)
    engine._client.close()


def _tree(root: Path) -> dict[bytes, str]:
    """Relative path (bytes) -> sha256 / "dir" / "link:…" of everything under ``root``."""
    found: dict[bytes, str] = {}
    for folder, dirs, files in os.walk(os.fsencode(root)):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.fsencode(root))
            if os.path.islink(path):
                found[rel] = "link:" + os.fsdecode(os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = "dir"
            elif not os.path.isfile(path):
                found[rel] = "special"
            else:
                with open(path, "rb") as handle:
                    found[rel] = hashlib.sha256(handle.read()).hexdigest()
    return found


def _layout(root: Path, fixtures: dict[str, bytes | None]) -> dict[str, Any]:
    """The runner's mounts over ``root``: ``fixtures`` (None: an empty folder)."""
    (root / "project").mkdir()
    (root / "project/p.py").write_text(f"# {uuid.uuid4().hex}\n")
    (root / "fixtures").mkdir()
    for rel, data in fixtures.items():
        path = root / "fixtures" / rel
        if data is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    out, meta = root / "out", root / "meta"
    mounts = (
        Mount(source=root / "project", target="/project"),
        Mount(source=root / "fixtures", target="/fixtures"),
        Mount(source=HARNESS, target="/opt/reprocheck"),
        Mount(source=out, target="/out", read_only=False),
        Mount(source=meta, target="/meta", read_only=False),
    )
    return {"root": root, "mounts": mounts, "out": out, "meta": meta}


def _spec(case: Case, layout: dict[str, Any], scenario: str, **spec: Any) -> ContainerSpec:
    for folder in (layout["out"], layout["meta"]):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        folder.chmod(0o777)  # as the runner does: the container's user writes there
    (layout["meta"] / "spec.json").write_text(json.dumps({"scenario": scenario, **spec}))
    return probe_spec(case.image, PROBE, layout["mounts"])


def _run(case: Case, spec: ContainerSpec) -> Any:
    outcome = case.engine.run(spec)
    assert outcome.exit_code == 0, outcome.log
    return outcome


def _report(layout: dict[str, Any]) -> dict[str, Any]:
    return json.loads((layout["out"] / "report.json").read_text())  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("case", ALL_CASES, indirect=True)
def test_odd_names_go_in_and_come_back(case: Case, tmp_path: Path) -> None:
    fixtures: dict[str, bytes | None] = {name: name.encode("utf-8", "surrogateescape")
                                         for name in NAMES}  # fmt: skip
    fixtures |= {f"sub dir/-{name}": b"nested " + os.urandom(16) for name in NAMES[:4]}
    fixtures |= {"empty.bin": b"", "empty folder": None, "a/b/c/empty folder": None}
    fixtures |= {f"{DEEP}/deep leaf.bin": b"deep", f"{DEEP}/x/empty": None}
    layout = _layout(tmp_path, fixtures)
    outcome = _run(case, _spec(case, layout, "mirror"))
    host = _tree(tmp_path / "fixtures")
    inputs = {os.fsencode(path)[len(b"/fixtures/") :]: digest
              for path, digest in _report(layout)["inputs"].items()}  # fmt: skip
    assert inputs == host  # every name, empty file and empty folder arrived as it is
    assert _tree(layout["out"] / "mirror") == host  # and came back under the same names
    if not case.engine.local:
        assert outcome.transfer["verified_out"] is True
        assert outcome.transfer["files_out"] >= len(NAMES)


@pytest.mark.parametrize("case", ALL_CASES, indirect=True)
@pytest.mark.parametrize(
    "fixtures",
    [{"only": None}, {}, {"a/b/c": None}],
    ids=["a single empty folder", "nothing", "nested empty folders"],
)
def test_empty_fixture_folders(case: Case, tmp_path: Path, fixtures: dict) -> None:
    layout = _layout(tmp_path, fixtures)
    outcome = _run(case, _spec(case, layout, "mirror"))
    inputs = {os.fsencode(path)[len(b"/fixtures/") :]: digest
              for path, digest in _report(layout)["inputs"].items()}  # fmt: skip
    assert inputs == _tree(tmp_path / "fixtures")
    assert _tree(layout["out"] / "mirror") == _tree(tmp_path / "fixtures")
    if not case.engine.local:
        assert outcome.transfer["verified_out"] is True


@pytest.mark.parametrize("case", ALL_CASES, indirect=True)
def test_special_files_in_the_outputs(case: Case, tmp_path: Path) -> None:
    """Unreadable files and folders, a FIFO, a socket, link loops, a hard link, a seeded
    file replaced by a folder: the run succeeds and the host folder shows what the
    container left, but FIFOs and sockets (they stay on the engine)."""
    layout = _layout(tmp_path, {"a.bin": b"a"})
    outcome = _run(case, _spec(case, layout, "special"))
    out, meta = layout["out"], layout["meta"]
    for name in ("plain.txt", "hardlink.txt"):
        assert (out / name).read_text() == "plain\n"
    assert (out / "out").read_text() == "out\n"
    assert (out / "empty.bin").read_bytes() == b""
    assert (out / "empty-dir").is_dir() and not any((out / "empty-dir").iterdir())
    for name, target in (("loop-a", "loop-b"), ("loop-b", "loop-a"), ("self", "self"),
                         ("dot", "."), ("through-dots", "dot/dot/dot/plain.txt")):  # fmt: skip
        assert os.readlink(out / name) == target
    assert (meta / "meta/meta").is_dir()
    assert (meta / "spec.json/inner").is_dir()  # the seeded file is gone, as with a bind mount
    if case.engine.local:
        return
    (out / "locked-dir").chmod(0o755)  # as it is on the engine (root reads it there)
    assert (out / "locked-dir/inner/file.txt").read_text() == "behind a locked folder\n"
    assert (out / "locked.txt").read_text() == "nobody reads me\n"
    assert not (out / "fifo").exists() and not (out / "socket").exists()
    assert outcome.transfer["verified_out"] is True  # an unreadable file spoils no manifest
    listed = json.loads((meta / ".transfer-sha256.json").read_text())["files"]
    assert {"/out/plain.txt", "/out/hardlink.txt", "/out/out"} <= set(listed)
    assert "/out/locked.txt" not in listed


@pytest.mark.parametrize("case", VOLUME_CASES, indirect=True)
@pytest.mark.parametrize("depth", [20, 30])
def test_an_output_path_too_long_is_a_one_line_error(
    case: Case, tmp_path: Path, depth: int
) -> None:
    """20 levels: about 4,030 bytes under /out, too long under this host's folder (or for
    the engine's archive). 30: deeper than PATH_MAX in the container; the engine's archive
    ends short (Podman) or leaves it out (Docker), and the harness cannot hash it either."""
    here = tmp_path / ("long" * 25)  # the host folder: 100 bytes longer
    here.mkdir()
    layout = _layout(here, {"a.bin": b"a"})
    try:
        outcome = case.engine.run(_spec(case, layout, "deep-out", depth=depth))
    except EngineError as exc:
        assert "\n" not in str(exc)
        assert "could not be copied back" in str(exc) or "differ after the copy" in str(exc)
    else:  # Docker leaves out what is too long for its archive: nothing reached the host
        assert outcome.exit_code == 0 and outcome.transfer["verified_out"] is True
        assert not list(layout["out"].rglob("leaf.txt"))


@pytest.mark.parametrize("case", VOLUME_CASES, indirect=True)
@pytest.mark.parametrize(
    "manifest",
    ["folder", "huge", "nested", "not json", '{"files": ["x"]}', '{"files": 5}', "[]", "null"],
)
def test_a_manifest_the_pipeline_spoiled_skips_the_check(
    case: Case, tmp_path: Path, manifest: str
) -> None:
    layout = _layout(tmp_path, {"a.bin": b"a"})
    outcome = _run(case, _spec(case, layout, "mirror", manifest=manifest))
    assert outcome.transfer["verified_out"] is False
    assert (layout["out"] / "mirror/a.bin").read_bytes() == b"a"


@pytest.mark.parametrize("case", VOLUME_CASES, indirect=True)
def test_a_manifest_naming_odd_files_fails_in_one_line(case: Case, tmp_path: Path) -> None:
    lie = {"files": {"/out/report.json": 5, "/out/new\nline": "0" * 64}}
    layout = _layout(tmp_path, {"a.bin": b"a"})
    with pytest.raises(EngineError, match="differ after the copy") as caught:
        case.engine.run(_spec(case, layout, "mirror", manifest=json.dumps(lie)))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ALL_CASES, indirect=True)
def test_project_links_to_host_files_stay_links(case: Case, tmp_path: Path) -> None:
    """Bind mounts and volumes agree: the container sees the link, resolved in its own
    file system, never the content of the host file it names."""
    secret = tmp_path / "outside/secret.txt"
    secret.parent.mkdir()
    secret.write_text(f"host secret {uuid.uuid4().hex}\n")
    layout = _layout(tmp_path, {"a.bin": b"a"})
    project = tmp_path / "project"
    links = {"shadow": "/etc/shadow", "outside-abs": str(secret),
             "outside-rel": "../outside/secret.txt", "inside": "p.py"}  # fmt: skip
    for name, target in links.items():
        (project / name).symlink_to(target)
    _run(case, _spec(case, layout, "links"))
    report = _report(layout)
    for name, target in links.items():
        assert report[name]["link"] == target, name
    host = {hashlib.sha256(secret.read_bytes()).hexdigest()}
    if Path("/etc/shadow").exists():
        host.add(hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest())
    for name in ("shadow", "outside-abs", "outside-rel"):
        assert report[name]["content"] not in host, name
        assert report[name]["content"].startswith("error:"), name  # absent, or not ours
    inside = hashlib.sha256((project / "p.py").read_bytes()).hexdigest()
    assert report["inside"]["content"] == inside


@pytest.mark.parametrize("case", ALL_CASES, indirect=True)
def test_mount_sources_that_are_links(case: Case, tmp_path: Path) -> None:
    """A fixtures folder (or a single file) mounted through a link on the host: a bind
    mount shows what it names; so must a volume."""
    layout = _layout(tmp_path, {"a.bin": b"through a link"})
    (tmp_path / "fixtures").rename(tmp_path / "real-fixtures")
    (tmp_path / "fixtures").symlink_to(tmp_path / "real-fixtures")
    (tmp_path / "real-ca.crt").write_text("ca\n")
    (tmp_path / "ca.crt").symlink_to("real-ca.crt")
    mounts = (*layout["mounts"], Mount(source=tmp_path / "ca.crt", target="/run/x/ca.crt"))
    layout["mounts"] = mounts
    _run(case, _spec(case, layout, "mirror"))
    assert (layout["out"] / "mirror/a.bin").read_bytes() == b"through a link"
