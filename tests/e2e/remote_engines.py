"""Real remote engines for the e2e tier: a registry, a second Docker daemon, that daemon over
ssh, and Podman's Docker-compatible API. Each is a session fixture that starts the real
service on first use and stops (and removes) only what it started, at the end of the session.
A missing tool skips the tests that ask for it (scripts/setup.sh installs them all in CI);
a tool that is present but does not start fails them, with its log's tail.

``tests/e2e/conftest.py`` imports the fixtures, so any e2e test can request them:

- ``registry`` -> ``"127.0.0.1:5000"``: Debian's docker-registry with a config of its own
  (reused when a registry already answers there).
- ``second_daemon`` -> :class:`SecondDaemon`: an independent dockerd (own data root, exec
  root, key and bridge); ``.socket`` is its ``unix://`` address.
- ``ssh_docker_host`` -> ``"ssh://root@reprocheck-e2e-2222:2222"``: an ~/.ssh/config alias of a
  test sshd on 127.0.0.1:2222 whose key runs ``docker system dial-stdio`` against the
  second daemon.
- ``podman_host`` -> ``"unix:///tmp/rcpd-…/podman.sock"``: ``podman system service`` with its
  own storage, capped ulimits and 127.0.0.1:5000 as an insecure (http) registry.

Helpers: :func:`push_to` (an image of the first daemon into the registry, by digest),
:func:`load_image` (that image pulled by digest into another engine), :func:`example_image`
(the newest local build of one of the repo's images).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reprocheck.engine.base import ContainerSpec

REGISTRY = "127.0.0.1:5000"
SSH_PORT = 2222
BRIDGES = tuple(f"rcbr{i}" for i in range(10))  # the second daemon's own bridge: first free
# Podman fails every run with "error setting rlimit" without these caps (FACTS.md).
PODMAN_ULIMITS = '["nofile=20000:20000", "nproc=4096:4096"]'

# for the session summary (tests/e2e/conftest.py): seconds each service took to answer
# (and image pushes and pulls), and figures tests record (transfer times)
START_TIMES: dict[str, float] = {}
MEASURED: dict[str, Any] = {}
_PUSHED: dict[tuple[str, str], str] = {}  # (registry, image id) -> REGISTRY/REPO@sha256:…
_LOADED: set[tuple[str, str]] = set()  # (engine address, digest reference)


# ----------------------------------------------------------------------------- plumbing


def _need(tool: str, package: str) -> str:
    """The tool's path; skip (never fail) when it is not installed."""
    found = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package}; scripts/setup.sh does)")
    return found


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (it starts daemons and network interfaces)")


def _short_dir(prefix: str) -> Path:
    """A private folder under /tmp: unix socket paths must stay under about 100 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _service(
    name: str,
    argv: list[str],
    log: Path,
    ready: Callable[[], bool],
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` (output to ``log``), wait until ``ready()``, stop it afterwards (TERM,
    then KILL); the start time goes to :data:`START_TIMES`."""
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited ({proc.returncode}) before answering; "
                            f"{log}:\n{_tail(log)}", pytrace=False)  # fmt: skip
            if time.monotonic() - started > timeout:
                pytest.fail(f"{name} did not answer within {timeout:.0f} s; {log}:\n{_tail(log)}",
                            pytrace=False)  # fmt: skip
            time.sleep(0.1)
        START_TIMES[name] = round(time.monotonic() - started, 2)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder) + "/"
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return [p for p in points if p.startswith(prefix) or p == str(folder)]


def _remove_tree(folder: Path) -> None:
    """Remove a daemon's folder: what it left mounted there is unmounted first (deepest
    first); a folder that still holds a mount is left alone rather than half-deleted."""
    for point in sorted(_mounts_under(folder), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if _mounts_under(folder):
        return
    shutil.rmtree(folder, ignore_errors=True)


def _docker_client(base_url: str, **kwargs: Any) -> Any:
    import docker

    return docker.DockerClient(base_url=base_url, timeout=600, **kwargs)


def _answers(base_url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            client = _docker_client(base_url)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # not listening yet: docker.errors.DockerException, OSError
            return False

    return ready


# ----------------------------------------------------------------------------- registry


def _registry_status(address: str) -> int | None:
    """The HTTP status of ``GET /v2/`` at ``address`` (200: an open registry), or None."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}/v2/", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {address}
"""


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"127.0.0.1:5000"``: a registry (plain http, loopback) for the session."""
    status = _registry_status(REGISTRY)
    if status == 200:
        START_TIMES["registry (one answered already)"] = 0.0
        yield REGISTRY
        return
    if status is not None or _port_open(int(REGISTRY.rpartition(":")[2])):
        pytest.skip(f"{REGISTRY} is taken by something that is not an open registry "
                    f"(GET /v2/: {status})")  # fmt: skip
    binary = _need("docker-registry", "docker-registry")
    folder = tmp_path_factory.mktemp("registry")
    config = folder / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=folder / "storage", address=REGISTRY))
    with _service("registry", [binary, "serve", str(config)], folder / "registry.log",
                  lambda: _registry_status(REGISTRY) == 200, timeout=30):  # fmt: skip
        yield REGISTRY
    _PUSHED.clear()  # its storage goes with the session's tmp folder


def push_to(registry: str, local_ref: str) -> str:
    """Push ``local_ref`` (an image of the first daemon: tag or ID) to ``registry``; its
    reference by digest there, ``REGISTRY/REPO@sha256:…``. Once per image and session."""
    import docker

    client = docker.from_env(timeout=600)
    try:
        image = client.images.get(local_ref)
        key = (registry, str(image.id))
        if key in _PUSHED:
            return _PUSHED[key]
        name, tag = _name_and_tag(local_ref, image)
        repository = f"{registry}/{name}"
        started = time.monotonic()
        image.tag(repository, tag)
        digest = ""
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise AssertionError(f"push of {local_ref} to {registry}: {chunk['error']}")
            digest = str((chunk.get("aux") or {}).get("Digest", "")) or digest
        if image.tags:  # only a tag more: untag (an untagged image would be deleted)
            client.images.remove(f"{repository}:{tag}")
        assert digest.startswith("sha256:"), f"the push of {local_ref} reported no digest"
        _PUSHED[key] = f"{repository}@{digest}"
        START_TIMES[f"push {local_ref} to {registry}"] = round(time.monotonic() - started, 2)
        return _PUSHED[key]
    finally:
        client.close()


def _name_and_tag(local_ref: str, image: Any) -> tuple[str, str]:
    """``(NAME, TAG)`` to push ``local_ref`` as, without the registry host it may name."""
    ref = local_ref if not local_ref.startswith("sha256:") else (image.tags or [""])[0]
    if not ref:
        return "reprocheck/untagged", str(image.id).removeprefix("sha256:")[:12]
    name, _, tag = ref.partition("@")[0].rpartition(":")
    if not name or "/" in tag:  # no tag (a registry port is no tag)
        name, tag = ref.partition("@")[0], "latest"
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name, tag


def load_image(registry: str, local_ref: str, base_url: str) -> str:
    """``local_ref`` (first daemon) present on the engine at ``base_url`` (``unix://``,
    ``ssh://``), pulled by digest through ``registry``; the digest reference to run there."""
    ref = push_to(registry, local_ref)
    if (base_url, ref) in _LOADED:
        return ref
    started = time.monotonic()
    client = _docker_client(base_url, use_ssh_client=base_url.startswith("ssh://"))
    try:
        client.images.pull(ref)
    finally:
        client.close()
    START_TIMES[f"pull {ref.rpartition('@')[0]} into {base_url}"] = round(
        time.monotonic() - started, 2
    )
    _LOADED.add((base_url, ref))
    return ref


def example_image(name: str) -> str:
    """The newest local build of ``images/NAME`` (``reprocheck/NAME:…``); skip when there
    is none (scripts/setup.sh builds them)."""
    import docker

    client = docker.from_env()
    try:
        found = client.images.list(name=f"reprocheck/{name}")
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker Engine: {exc}")
    finally:
        client.close()
    tagged = [(image, tag) for image in found for tag in image.tags
              if tag.startswith(f"reprocheck/{name}:")]  # fmt: skip
    if not tagged:
        pytest.skip(f"no reprocheck/{name} image here: run scripts/setup.sh")
    _image, tag = max(tagged, key=lambda pair: str(pair[0].attrs.get("Created", "")))
    return str(tag)


# ----------------------------------------------------------------------- a second daemon


@dataclass(frozen=True, kw_only=True)
class SecondDaemon:
    socket: str  # unix:///tmp/rc2d-…/docker.sock
    folder: Path  # its data root, exec root, pidfile, key and log are under it
    bridge: str
    id: str  # docker info's ID: not the first daemon's


def _links() -> set[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return {line.split(":")[1].strip().partition("@")[0] for line in done.stdout.splitlines()}


def _check_docker0(had_it: bool, when: str) -> None:
    if had_it and "docker0" not in _links():
        pytest.fail(f"the first daemon's docker0 is gone {when}: restart the first dockerd",
                    pytrace=False)  # fmt: skip


@contextlib.contextmanager
def _own_bridge() -> Iterator[str]:
    """A bridge for the second daemon (never ``--bridge none``: that deletes docker0)."""
    taken = _links()
    name = next((b for b in BRIDGES if b not in taken), None)
    if name is None:
        pytest.skip(f"bridges {BRIDGES[0]}..{BRIDGES[-1]} all exist already")
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)


@pytest.fixture(scope="session")
def second_daemon() -> Iterator[SecondDaemon]:
    """An independent Docker daemon beside the first one; it shares no images with it."""
    _need_root("a second Docker daemon")
    dockerd = _need("dockerd", "docker.io")
    _need("ip", "iproute2")
    had_docker0 = "docker0" in _links()
    folder = _short_dir("rc2d-")
    address = f"unix://{folder}/docker.sock"
    # Its own config (not /etc/docker/daemon.json) and key: 20.10 derives the ID from the key.
    (folder / "daemon.json").write_text(json.dumps({"deprecated-key-path": f"{folder}/key.json"}))
    try:
        with _own_bridge() as bridge:
            argv = [dockerd, "-H", address, "--config-file", f"{folder}/daemon.json",
                    "--data-root", f"{folder}/root", "--exec-root", f"{folder}/exec",
                    "--pidfile", f"{folder}/docker.pid",
                    "--bridge", bridge, "--iptables=false", "--ip6tables=false"]  # fmt: skip
            with _service("second dockerd", argv, folder / "dockerd.log", _answers(address)):
                _check_docker0(had_docker0, "after the second daemon started")
                client = _docker_client(address)
                try:
                    info = client.info()
                finally:
                    client.close()
                assert info["DockerRootDir"] == f"{folder}/root", info["DockerRootDir"]
                yield SecondDaemon(socket=address, folder=folder, bridge=bridge,
                                   id=str(info["ID"]))  # fmt: skip
    finally:
        _remove_tree(folder)
    _check_docker0(had_docker0, "after the second daemon stopped")


# --------------------------------------------------------------------------- over ssh


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/host_key
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers root
LogLevel ERROR
"""


def _ssh_alias_block(alias: str, port: int, key: Path, mark: str) -> str:
    return (
        f"# >>> {mark} (removed at the end of the session)\n"
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
        # One ssh connection for all requests: the docker SDK starts an ssh process per API
        # call (docker-py #2966); multiplexed, a call costs 0.18 s here instead of 0.43 s.
        # REPROCHECK_E2E_SSH_MUX=0 measures without (what a user without it in ~/.ssh/config gets).
        + (
            f"  ControlMaster auto\n  ControlPath {key.parent}/mux-%C\n  ControlPersist 120\n"
            if os.environ.get("REPROCHECK_E2E_SSH_MUX", "1") != "0"
            else ""
        )
        + f"# <<< {mark}\n"
    )


@contextlib.contextmanager
def _ssh_config_entry(block: str, mark: str) -> Iterator[None]:
    """``block`` put first in ~/.ssh/config (ssh takes the first value it finds for an
    option, so an existing ``Host *`` cannot override it); only that block is removed."""
    folder = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"  # ssh reads the passwd home
    made = not folder.exists()
    folder.mkdir(mode=0o700, exist_ok=True)
    config = folder / "config"
    existed = config.exists()
    config.write_text(block + (config.read_text() if existed else ""))
    config.chmod(0o600)
    try:
        yield
    finally:
        text = config.read_text()
        start, end = text.find(f"# >>> {mark}"), text.find(f"# <<< {mark}\n")
        if start >= 0 and end >= 0:
            text = text[:start] + text[end + len(f"# <<< {mark}\n") :]
        if text or existed:
            config.write_text(text)
        else:
            config.unlink()
            if made and not any(folder.iterdir()):
                folder.rmdir()


@pytest.fixture(scope="session")
def ssh_docker_host(second_daemon: SecondDaemon) -> Iterator[str]:
    """``ssh://root@reprocheck-e2e-PORT:PORT``, reaching the second daemon through a test sshd."""
    _need_root("a test sshd")
    sshd = _need("sshd", "openssh-server")
    ssh = _need("ssh", "openssh-client")
    keygen = _need("ssh-keygen", "openssh-client")
    docker_cli = _need("docker", "docker.io")
    try:
        import paramiko  # noqa: F401  (the docker SDK imports it even with use_ssh_client)
    except ImportError:
        pytest.skip("the docker SDK's ssh transport needs paramiko: pip install 'docker[ssh]'")
    folder = _short_dir("rcssh-")
    port = SSH_PORT if not _port_open(SSH_PORT) else _free_port()
    for key in ("host_key", "id_ed25519"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "reprocheck-e2e",
                        "-f", str(folder / key)], check=True)  # fmt: skip
    # Whatever the client asks to run, this key only bridges stdio to the second daemon.
    forced = f"DOCKER_HOST={second_daemon.socket} exec {docker_cli} system dial-stdio"
    public = (folder / "id_ed25519.pub").read_text().strip()
    (folder / "authorized_keys").write_text(f'command="{forced}",restrict {public}\n')
    (folder / "sshd_config").write_text(SSHD_CONFIG.format(port=port, folder=folder))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    check = subprocess.run([sshd, "-t", "-f", str(folder / "sshd_config")],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    alias, mark = f"reprocheck-e2e-{port}", f"reprocheck e2e {os.getpid()}"
    url = f"ssh://root@{alias}:{port}"  # the SDK passes "-p 22" when the URL names no port
    argv = [sshd, "-D", "-f", str(folder / "sshd_config"), "-E", str(folder / "sshd.log")]
    try:
        with (
            _service("sshd", argv, folder / "sshd.log", lambda: _port_open(port), timeout=20),
            _ssh_config_entry(_ssh_alias_block(alias, port, folder / "id_ed25519", mark), mark),
        ):
            started = time.monotonic()
            client = _docker_client(url, use_ssh_client=True)
            try:
                client.version()
                seen = str(client.info()["ID"])
            finally:
                client.close()
            START_TIMES["docker over ssh (connect + version + info)"] = round(
                time.monotonic() - started, 2
            )
            assert seen == second_daemon.id, (seen, second_daemon.id)
            try:
                yield url
            finally:  # the multiplexing master ssh started in the background
                subprocess.run([ssh, "-O", "exit", alias], capture_output=True, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------- podman


CONTAINERS_CONF = """\
[containers]
default_ulimits = {ulimits}
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{folder}/events.log"
# Locks as files under this service's --tmpdir: the default, one shared-memory segment for
# every Podman on the machine (2048 locks), kept the locks of services killed mid-run, and
# after a few such runs every volume create failed ("exceeded num_locks (2048)").
lock_type = "file"
"""

REGISTRIES_CONF = """\
unqualified-search-registries = []

[[registry]]
location = "{registry}"
insecure = true
"""


@pytest.fixture(scope="session")
def podman_host() -> Iterator[str]:
    """``unix:///tmp/rcpd-…/podman.sock``: Podman's Docker-compatible API, on storage of
    its own (images come through :func:`load_image`)."""
    _need_root("a podman service with storage of its own")
    podman = _need("podman", "podman")
    folder = _short_dir("rcpd-")
    (folder / "containers.conf").write_text(
        CONTAINERS_CONF.format(ulimits=PODMAN_ULIMITS, folder=folder)
    )
    (folder / "registries.conf").write_text(REGISTRIES_CONF.format(registry=REGISTRY))
    env = {**os.environ, "CONTAINERS_CONF": f"{folder}/containers.conf",
           "CONTAINERS_REGISTRIES_CONF": f"{folder}/registries.conf"}  # fmt: skip
    address = f"unix://{folder}/podman.sock"
    argv = [podman, "--root", f"{folder}/storage", "--runroot", f"{folder}/run",
            "--tmpdir", f"{folder}/tmp", "system", "service", "--time=0", address]  # fmt: skip
    try:
        with _service("podman service", argv, folder / "podman.log", _answers(address), env=env):
            yield address
    finally:
        _remove_tree(folder)


# The start of the in-container scripts of the remote-engine tests: hashes of files as the
# harness computes them, and what a folder holds (links by target; folders as "dir" when the
# script sets FOLDERS before calling seen).
PROBE_PRELUDE = r"""
import hashlib, json, os

def sha(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()

def seen(root):
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                found[path] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                if FOLDERS:
                    found[path] = "dir"
            elif os.path.isfile(path):
                found[path] = sha(path)
    return found
"""


def probe_spec(image: str, probe: str, mounts: Any, **extra: Any) -> ContainerSpec:
    """The container spec the remote-engine tests run ``probe`` (a ``python3 -c`` script) in,
    with the runner's limits."""
    return ContainerSpec(image=image, command=("python3", "-c", probe), mounts=mounts,
                         env={"PYTHONDONTWRITEBYTECODE": "1"}, workdir="/project",
                         memory="1g", pids_limit=256, timeout=300, **extra)  # fmt: skip
