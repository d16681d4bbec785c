"""Sharding: fixtures split across containers, joined into one environment result; a failed
shard is retried once and then fails only its own fixtures. The engine is a fake."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEngine, Mounted, all_ok, image_info, outcome
from hypothesis import given
from hypothesis import strategies as st

from reprocheck.config import load_config
from reprocheck.errors import ConfigError
from reprocheck.plan import make_plan
from reprocheck.runner import Runner
from reprocheck.shards import split

FIXTURES = {f"inputs/f{i}.png": str(i) for i in range(7)}


@pytest.fixture(autouse=True)
def _no_host_ca(no_host_ca: None) -> None:
    """No CA bundle from the environment."""


@given(st.lists(st.text(min_size=1, max_size=3), max_size=40), st.integers(1, 50))
def test_split_keeps_every_fixture_once_in_order(fixtures: list[str], shards: int) -> None:
    slices = split(fixtures, shards)
    assert [f for part in slices for f in part] == fixtures
    assert len(slices) == max(1, min(shards, len(fixtures)))
    sizes = [len(part) for part in slices]
    assert max(sizes) - min(sizes) <= 1
    assert all(sizes) or not fixtures


def _run(make_project, engine: FakeEngine, tmp_path: Path, extra: str = "", run: str = ""):
    text = (f'[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "inputs"\n[run]\n{run}\n'
            f'[[environments]]\nname = "one"\nimage = "img/one:1"\n{extra}\n')  # fmt: skip
    config = load_config(make_project(text, FIXTURES))
    engine.add("img/one:1")
    return Runner(engine, make_plan(config), run_id="r").run(tmp_path / "reports" / "r")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _writes_probes(box: Mounted) -> object:
    result = all_ok(box)
    probes = box.meta / "probes"
    probes.mkdir(exist_ok=True)
    for fixture in box.plan["fixtures"]:
        np.savez(probes / f"{fixture}.npz", stage=np.array([len(fixture)]))
    return result


def test_three_shards_join_into_what_one_container_gives(
    make_project, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    fake_engine.behaviours["one"] = _writes_probes
    whole = _run(make_project, fake_engine, tmp_path / "a").environments[0]
    runs_before = len(fake_engine.runs)
    sharded = _run(make_project, fake_engine, tmp_path / "b", "shards = 3").environments[0]
    assert len(fake_engine.runs) - runs_before == 3
    assert sharded.status == whole.status == "ok"
    assert [f.fixture for f in sharded.fixtures] == [f.fixture for f in whole.fixtures]
    assert _files(sharded.outputs_dir) == _files(whole.outputs_dir)
    assert _files(sharded.meta_dir / "probes") == _files(whole.meta_dir / "probes")
    assert sharded.fingerprint == whole.fingerprint
    plan = json.loads((sharded.meta_dir / "spec.json").read_text())
    assert plan["fixtures"] == [f"f{i}.png" for i in range(7)]
    assert not (sharded.outputs_dir.parent / "shards").exists()
    assert (sharded.outputs_dir.parent / "outputs.arrow").exists()  # indexed once, joined


def test_a_shard_that_crashes_once_is_retried(
    make_project, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    crashes: list[str] = []

    def flaky(box: Mounted) -> object:
        first = box.plan["fixtures"][0]
        if first == "f0.png" and not crashes:
            crashes.append(first)
            return outcome(139, log="Segmentation fault")
        return all_ok(box)

    fake_engine.behaviours["one"] = flaky
    env = _run(make_project, fake_engine, tmp_path, "shards = 2").environments[0]
    assert crashes == ["f0.png"]
    assert len(fake_engine.runs) == 3
    assert env.status == "ok"


def test_a_shard_that_keeps_failing_fails_only_its_fixtures(
    make_project, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    def broken_first(box: Mounted) -> object:
        if box.plan["fixtures"][0] == "f0.png":
            return outcome(137, oom=True)
        return all_ok(box)

    fake_engine.behaviours["one"] = broken_first
    env = _run(make_project, fake_engine, tmp_path, "", run="shards = 2").environments[0]
    assert len(fake_engine.runs) == 3  # shard 0 twice, shard 1 once
    assert env.status == "partial"
    failed = [f.fixture for f in env.fixtures if f.status != "ok"]
    assert failed == ["f0.png", "f1.png", "f2.png", "f3.png"]
    assert "out of memory" in (env.fixtures[0].error or "")
    assert sorted(p.name for p in env.outputs_dir.iterdir()) == [
        f"f{i}.png.npz" for i in range(4, 7)
    ]


def test_shards_need_a_callable_pipeline(make_project) -> None:
    text = ('[pipeline]\ncommand = ["true"]\n[run]\nshards = 2\n'
            '[[environments]]\nname = "one"\nimage = "img/one:1"\n')  # fmt: skip
    with pytest.raises(ConfigError, match=r"run.shards.*callable"):
        load_config(make_project(text, FIXTURES))


def test_shards_are_spread_over_hosts(
    make_project, fake_engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hosts``: shard k on host k mod len(hosts), each host's engine connected once, the
    image delivered to each; the fingerprint records the first shard's engine."""
    import dataclasses

    from reprocheck import registry
    from reprocheck.engine.targets import Engines, EngineTarget

    remotes: dict[str, FakeEngine] = {}

    def connect(target: EngineTarget) -> FakeEngine:
        assert target.host is not None
        remotes[target.host] = FakeEngine(where=f"docker at {target.host}", local=False)
        return remotes[target.host]

    def deliver(_config, image, _env, engine, _local, _progress):
        return dataclasses.replace(image, ref=f"{engine.where}/img@sha256:" + "0" * 64)

    monkeypatch.setattr(registry, "deliver", deliver)
    text = ('[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "inputs"\n'
            '[[environments]]\nname = "one"\nimage = "img/one:1"\nshards = 3\n'
            'hosts = ["ssh://a", "ssh://b"]\n')  # fmt: skip
    config = load_config(make_project(text, FIXTURES))
    fake_engine.add("img/one:1")
    engines = Engines(default=fake_engine, connect=connect)
    result = Runner(fake_engine, make_plan(config), run_id="r", engines=engines).run(tmp_path / "r")
    env = result.environments[0]
    assert env.status == "ok"
    assert sorted(remotes) == ["ssh://a", "ssh://b"]
    assert {host: len(e.runs) for host, e in remotes.items()} == {"ssh://a": 2, "ssh://b": 1}
    assert not fake_engine.runs  # nothing ran on the default engine
    assert env.image_ref == "docker at ssh://a/img@sha256:" + "0" * 64
    assert env.fingerprint["engine"]["where"] == "docker at ssh://a"


def test_every_shard_failing_alike_is_that_failure(
    make_project, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    fake_engine.behaviours["one"] = lambda box: outcome(139, log="Segmentation fault")
    env = _run(make_project, fake_engine, tmp_path, "shards = 2").environments[0]
    assert len(fake_engine.runs) == 4  # each shard twice
    assert env.status == "crash"
    assert "SIGSEGV" in (env.error or "")
    assert {f.status for f in env.fixtures} == {"error"}


def test_an_image_by_digest_that_only_another_engine_runs_is_not_pulled_here(
    make_project, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    from reprocheck.engine.targets import Engines, EngineTarget

    pinned = "127.0.0.1:5000/reprocheck/tool@sha256:" + "d" * 64
    registry = {pinned: image_info("tool", "sha256:" + "7" * 64)}
    remote = FakeEngine(where="docker at ssh://a", local=False, registry=registry)

    def connect(target: EngineTarget) -> FakeEngine:
        return remote

    text = ('[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "inputs"\n'
            f'[[environments]]\nname = "one"\nimage = "{pinned}"\nhost = "ssh://a"\n')  # fmt: skip
    config = load_config(make_project(text, FIXTURES))
    fake_engine.registry.update(registry)
    engines = Engines(default=fake_engine, connect=connect)
    result = Runner(fake_engine, make_plan(config), run_id="r", engines=engines).run(tmp_path / "r")
    env = result.environments[0]
    assert env.status == "ok" and env.image_ref == pinned
    assert remote.pulls == [pinned] and len(remote.runs) == 1
    assert fake_engine.pulls == [] and pinned not in fake_engine.present  # nothing here
