"""End-to-end tier fixtures: the real remote engines (tests/e2e/remote_engines.py)."""

from __future__ import annotations

from typing import Any

from remote_engines import (  # noqa: F401  (fixtures, found by name)
    MEASURED,
    START_TIMES,
    podman_host,
    registry,
    second_daemon,
    ssh_docker_host,
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How long each remote engine this session started took to answer; what tests measured."""
    if START_TIMES:
        terminalreporter.section("remote engines started")
        for name, seconds in START_TIMES.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f} s")
    if MEASURED:
        terminalreporter.section("remote engines measured")
        for name, value in MEASURED.items():
            terminalreporter.write_line(f"{name}: {value}")
