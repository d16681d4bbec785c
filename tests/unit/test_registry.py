"""Images by digest through a registry: the lock file, push, and delivery to another engine
(two fake engines sharing one fake registry; the real registry is the e2e tier's)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeEngine, image_info
from rich.console import Console
from runs import stored_env, stored_run

from reprocheck import cli
from reprocheck.config import RunConfig, load_config
from reprocheck.engine import ImageInfo
from reprocheck.errors import ConfigError, EngineError
from reprocheck.images import ImageBuilder
from reprocheck.plan import with_cpus
from reprocheck.registry import (
    LockEntry,
    deliver,
    lock_path,
    push_images,
    read_lock,
    write_lock,
)
from reprocheck.report.json_report import environment_json
from reprocheck.store import load_run, save_run

REGISTRY = "127.0.0.1:5000/reprocheck"
DIGEST = "sha256:" + "d" * 64
PINNED = f"127.0.0.1:5000/reprocheck/tool@{DIGEST}"


@pytest.fixture(autouse=True)
def _no_host_ca(no_host_ca: None) -> None:
    """Context digests include the host CA bundle: none here."""


def _config(make_project, registry: bool = True, image: str = "images/env") -> RunConfig:
    images = f'[images]\nregistry = "{REGISTRY}"\n' if registry else ""
    text = (f'[pipeline]\ncallable = "p.py:run"\n{images}'
            f'[[environments]]\nname = "env"\nimage = "{image}"\n')  # fmt: skip
    return load_config(make_project(text, {"images/env/Dockerfile": "FROM debian:bookworm\n"}))


@pytest.fixture
def engines() -> tuple[FakeEngine, FakeEngine]:
    """This machine's engine (with the base image) and a remote one; one registry."""
    registry: dict[str, ImageInfo] = {}
    local = FakeEngine(registry=registry)
    local.add("debian:bookworm")
    return local, FakeEngine(name="docker", where="docker at ssh://root@box", local=False,
                             registry=registry)  # fmt: skip


def _entry(**changes: str | None) -> LockEntry:
    entry = LockEntry(image="images/env", pushed=f"{REGISTRY}/env:0123456789ab", digest=DIGEST,
                      context="c" * 64, image_id="sha256:" + "1" * 64)  # fmt: skip
    return dataclasses.replace(entry, **changes)


# --- the lock file --------------------------------------------------------------------------


def test_lock_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "reprocheck.lock.json"
    entries = {"b": _entry(), "a": _entry(context=None, platform="linux/arm64")}
    write_lock(path, entries)
    assert read_lock(path) == entries
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')  # stable diffs
    assert json.loads(text)["lock_version"] == 1
    assert entries["b"].reference == f"{REGISTRY}/env@{DIGEST}"
    assert read_lock(tmp_path / "absent.json") == {}


DAMAGED = {
    "not json": "{",
    "a list": "[]",
    "no version": '{"environments": {}}',
    "environments a list": '{"lock_version": 1, "environments": []}',
    "entry a string": '{"lock_version": 1, "environments": {"env": "x"}}',
    "no digest": json.dumps({"lock_version": 1, "environments": {"env": {
        "image": "i", "pushed": "r/x:t", "image_id": "sha256:1", "context": None}}}),
    "bad digest": json.dumps({"lock_version": 1, "environments": {"env": {
        "image": "i", "pushed": "r/x:t", "digest": "md5:1\nx", "image_id": "1"}}}),
    "pushed untagged": json.dumps({"lock_version": 1, "environments": {"env": {
        "image": "i", "pushed": "r/x", "digest": DIGEST, "image_id": "1"}}}),
    "context a number": json.dumps({"lock_version": 1, "environments": {"env": {
        "image": "i", "pushed": "r/x:t", "digest": DIGEST, "image_id": "1", "context": 3}}}),
}  # fmt: skip


@pytest.mark.parametrize("text", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_lock_is_one_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "reprocheck.lock.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_lock(path)
    message = str(caught.value)
    assert str(path) in message and "reprocheck images push" in message
    assert "\n" not in message


def test_lock_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_text('{"lock_version": 1, "environments": {}}')
    (tmp_path / "reprocheck.lock.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ConfigError, match="symbolic link"):
        read_lock(tmp_path / "reprocheck.lock.json")


def test_damaged_lock_fails_the_cli_in_one_line(make_project, engines, monkeypatch) -> None:
    config = _config(make_project)
    lock_path(config).write_text("{")
    monkeypatch.setattr(cli, "get_engine", lambda _name: engines[0])
    result = CliRunner().invoke(cli.main, ["images", "push", "--config", str(config.source)])
    assert result.exit_code == 2 and engines[0].builds == engines[0].pushes == []
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {lock_path(config)} is not valid JSON")
    assert "restore it from git" in line


# --- push ------------------------------------------------------------------------------------


def test_push_builds_pushes_and_locks(make_project, engines) -> None:
    local, _remote = engines
    config = _config(make_project)
    pushed = push_images(config, local, REGISTRY, config.environments)
    entry = pushed["env"]
    built = local.builds[0]
    assert entry.context == built.labels["io.reprocheck.context-sha256"]
    assert entry.pushed == f"{REGISTRY}/env:{entry.context[:12]}"
    assert entry.image_id == local.present[built.tag].id
    assert entry.digest.startswith("sha256:") and len(entry.digest) == 71
    assert read_lock(config.root / "reprocheck.lock.json") == {"env": entry}


def test_images_push_cli_prints_digests(make_project, engines, monkeypatch) -> None:
    config = _config(make_project, registry=False)
    monkeypatch.setattr(cli, "get_engine", lambda _name: engines[0])
    args = ["images", "push", "--config", str(config.source)]
    missing = CliRunner().invoke(cli.main, args)
    assert missing.exit_code == 2 and "no registry to push to" in missing.output
    bad = CliRunner().invoke(cli.main, [*args, "--registry", "Hub"])
    assert bad.exit_code == 2 and "is no registry" in bad.output
    done = CliRunner().invoke(cli.main, [*args, "--registry", f"{REGISTRY}/"])
    assert done.exit_code == 0, done.output
    entry = read_lock(lock_path(config))["env"]
    assert f"env            {entry.reference}" in done.output


def test_images_list_shows_the_pushed_digest(make_project, engines, monkeypatch) -> None:
    local, _remote = engines
    config = _config(make_project)
    entry = push_images(config, local, REGISTRY, config.environments)["env"]
    monkeypatch.setattr(cli, "_configured_engine", lambda _path: local)
    monkeypatch.setattr(cli, "out", Console(width=400))  # the reference unwrapped
    result = CliRunner().invoke(cli.main, ["images", "list", "--config", str(config.source)])
    assert result.exit_code == 0, result.output
    assert entry.reference in result.output


# --- deliver ---------------------------------------------------------------------------------


def test_deliver_pulls_the_locked_digest(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project, registry=False)
    entry = push_images(config, local, REGISTRY, config.environments)["env"]
    image = ImageBuilder(local, config).resolve(config.environments[0])
    there = deliver(config, image, config.environments[0], remote, local)
    assert remote.pulls == [entry.reference]  # by digest, never by tag
    assert there.ref == there.digest == entry.reference
    assert there.image_id == remote.present[entry.reference].id == image.image_id
    assert there.dockerfile == image.dockerfile


def test_deliver_pushes_when_nothing_is_locked(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project)
    env = config.environments[0]
    image = ImageBuilder(local, config).resolve(env)
    there = deliver(config, image, env, remote, local)
    entry = read_lock(lock_path(config))["env"]
    assert len(local.pushes) == 1
    assert there.ref == entry.reference and remote.pulls == [entry.reference]
    deliver(config, image, env, remote, local)  # present there now: no second push or pull
    assert len(local.pushes) == 1 and remote.pulls == [entry.reference]


def test_stale_context_digest_pushes_again(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project)
    env = config.environments[0]
    old = push_images(config, local, REGISTRY, [env])["env"]
    (config.root / "images" / "env" / "Dockerfile").write_text("FROM debian:bookworm\nRUN x\n")
    image = ImageBuilder(local, config).resolve(env)
    there = deliver(config, image, env, remote, local)
    new = read_lock(lock_path(config))["env"]
    assert new.context != old.context and new.digest != old.digest
    assert there.ref == new.reference and there.image_id == image.image_id


def test_stale_lock_without_registry_is_one_line(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project, registry=False)
    env = config.environments[0]
    push_images(config, local, REGISTRY, [env])
    (config.root / "images" / "env" / "Dockerfile").write_text("FROM debian:bookworm\nRUN x\n")
    image = ImageBuilder(local, config).resolve(env)
    with pytest.raises(ConfigError) as caught:
        deliver(config, image, env, remote, local)
    message = str(caught.value)
    assert "pushed from another version of images/env" in message
    assert remote.pulls == [] and len(local.pushes) == 1


def test_no_registry_says_how_to_give_one(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project, registry=False)
    env = config.environments[0]
    image = ImageBuilder(local, config).resolve(env)
    with pytest.raises(ConfigError) as caught:
        deliver(config, image, env, remote, local)
    message = str(caught.value)
    assert message.startswith("environment 'env' runs on docker at ssh://root@box; its image "
                              "must travel through a registry")  # fmt: skip
    assert "set [images] registry" in message
    assert "'reprocheck images push --registry HOST[:PORT]/PREFIX'" in message
    assert "\n" not in message and local.pushes == []


def test_cpu_model_copy_uses_its_environments_entry(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project, registry=False)
    entry = push_images(config, local, REGISTRY, config.environments)["env"]
    (copy,) = with_cpus(config.environments, ("x86-64-v2",))[1:]
    image = ImageBuilder(local, config).resolve(copy)
    assert deliver(config, image, copy, remote, local).ref == entry.reference


def test_digest_reference_is_pulled_as_is(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project, registry=False, image=PINNED)  # config validation accepts it
    env = config.environments[0]
    local.registry[PINNED] = image_info("whatever", "sha256:" + "7" * 64)
    there = deliver(config, None, env, remote, local)
    assert remote.pulls == [PINNED]
    assert there.ref == there.digest == PINNED and there.image_id == "sha256:" + "7" * 64
    local_image = ImageBuilder(local, config).resolve(env)  # recorded locally too
    assert local_image.digest == PINNED


def test_registry_image_goes_by_its_own_digest(make_project, engines) -> None:
    """A reference pulled from a registry has a repo digest: the remote pulls that one."""
    local, remote = engines
    config = _config(make_project, registry=False, image="myorg/tool:1.0")
    hub = f"myorg/tool@{DIGEST}"
    local.present["myorg/tool:1.0"] = local.registry[hub] = ImageInfo(
        ref="myorg/tool:1.0", id="sha256:" + "5" * 64, created="", repo_digests=(hub,)
    )
    image = ImageBuilder(local, config).resolve(config.environments[0])
    assert image.digest == hub
    there = deliver(config, image, config.environments[0], remote, local)
    assert there.ref == hub and remote.pulls == [hub] and local.pushes == []


def test_unpullable_digest_is_one_engine_error(make_project, engines) -> None:
    local, remote = engines
    config = _config(make_project, registry=False, image=PINNED)
    with pytest.raises(EngineError) as caught:
        deliver(config, None, config.environments[0], remote, local)
    assert f"docker at ssh://root@box cannot pull {PINNED}" in str(caught.value)
    assert "127.0.0.1:5000" in caught.value.fix


def test_push_failure_names_the_registry(make_project, engines) -> None:
    local, remote = engines
    local.push_error = EngineError(
        "cannot push x to the registry 127.0.0.1:5000: refused",
        fix="check that the registry at 127.0.0.1:5000 runs",
    )
    config = _config(make_project)
    image = ImageBuilder(local, config).resolve(config.environments[0])
    with pytest.raises(EngineError, match=r"127\.0\.0\.1:5000"):
        deliver(config, image, config.environments[0], remote, local)
    assert not lock_path(config).exists()


# --- runs record the digest ------------------------------------------------------------------


def test_run_json_and_report_record_the_digest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = dataclasses.replace(stored_env(run_dir, "env", {}), image_digest=PINNED)
    save_run(stored_run(run_dir, (env,)), latest=False)
    (loaded,) = load_run(run_dir).environments
    assert loaded.image_digest == PINNED
    assert environment_json(loaded)["image_digest"] == PINNED
    manifest = json.loads((run_dir / "run.json").read_text())
    del manifest["environments"][0]["image_digest"]  # runs stored before the field
    (run_dir / "run.json").write_text(json.dumps(manifest))
    assert load_run(run_dir).environments[0].image_digest is None
