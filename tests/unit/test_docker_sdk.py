"""The docker SDK imported without paramiko, which only ssh:// hosts use
(reprocheck.engine.docker_sdk)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_cli_imports_the_sdk_without_paramiko() -> None:
    code = "import sys, reprocheck.cli; print(sorted(m for m in sys.modules if 'paramiko' in m))"
    assert _python(code) == "[]"


def test_the_ssh_transport_gets_the_real_paramiko_on_first_use() -> None:
    code = """
import sys
import reprocheck.engine.docker_sdk
from docker.transport import sshconn
assert "paramiko" not in sys.modules  # nothing imported it yet
client = sshconn.paramiko.SSHClient  # what the transport reads when it connects
import paramiko
assert client is paramiko.SSHClient and sys.modules["paramiko"] is paramiko
assert sshconn.paramiko.RejectPolicy is paramiko.RejectPolicy
print(type(sshconn.paramiko).__name__)
"""
    assert _python(code) == "_Deferred"


def test_paramiko_imported_elsewhere_is_the_real_one() -> None:
    code = """
import paramiko
import reprocheck.engine.docker_sdk
from docker.transport import sshconn
print(sshconn.paramiko is paramiko)
"""
    assert _python(code) == "True"


def test_an_ssh_client_without_the_ssh_binary_uses_paramiko() -> None:
    """use_ssh_client=False: the SDK's own paramiko client, through the stand-in."""
    pytest.importorskip("paramiko")
    code = """
import docker.errors
from reprocheck.engine.docker_sdk import docker
try:
    docker.DockerClient(base_url="ssh://nobody@127.0.0.1:1", use_ssh_client=False, timeout=5)
except Exception as exc:  # refused: port 1; what matters is that paramiko was reached
    print(type(exc).__module__.split(".")[0], type(exc).__name__)
"""
    assert _python(code) == "paramiko NoValidConnectionsError"  # its connect, not a NameError
