"""Unit-tier fixtures: a fake engine (see fakes.py) and a deterministic CA environment."""

from __future__ import annotations

import pytest
from fakes import FakeEngine

from reprocheck.engine import ContainerEngine


def _conforms(engine: ContainerEngine) -> ContainerEngine:
    return engine  # a type checker holds FakeEngine to the Protocol here


@pytest.fixture
def fake_engine() -> FakeEngine:
    engine = FakeEngine()
    _conforms(engine)
    return engine


@pytest.fixture
def no_host_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds and containers pick a CA bundle from the environment; make that deterministic."""
    from reprocheck.images import CA_ENV_VARS

    for var in CA_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
