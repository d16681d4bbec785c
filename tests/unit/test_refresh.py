"""run --refresh's record: each environment's last stored result, the package versions a new
image changed, kept in run.json and shown by the reports."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from runs import stored_env, stored_run

from reprocheck.refresh import previous_environments, with_image_changes
from reprocheck.report.common import image_change_lines
from reprocheck.report.json_report import environment_json
from reprocheck.run_model import EnvironmentResult
from reprocheck.store import load_run, save_run


def _fp(dpkg: dict[str, str], pip: dict[str, str]) -> dict[str, object]:
    return {"packages": {"dpkg": dpkg, "pip": pip}}


def _save(reports: Path, run_id: str, *envs: tuple[str, str, dict[str, object]],
          mtime: int, status: str = "ok") -> None:  # fmt: skip
    run_dir = reports / run_id
    made = tuple(dataclasses.replace(stored_env(run_dir, name, {}, fingerprint=fp),
                                     image_id=image, status=status)  # type: ignore[arg-type]
                 for name, image, fp in envs)  # fmt: skip
    save_run(stored_run(run_dir, made), latest=False)
    os.utime(run_dir / "run.json", (mtime, mtime))


def test_the_newest_run_that_ran_each_environment(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    old = _fp({"libc6": "2.36-9"}, {"numpy": "1.26.4"})
    _save(reports, "r1", ("a", "sha256:1", old), ("b", "sha256:1", old), mtime=1000)
    _save(reports, "r2", ("a", "sha256:2", old), mtime=2000)
    _save(reports, "r3", ("a", "sha256:3", old), mtime=3000, status="crash")  # did not run
    (reports / "r4").mkdir()
    (reports / "r4" / "run.json").write_text("{damaged")  # skipped
    os.utime(reports / "r4" / "run.json", (4000, 4000))
    (reports / "latest").symlink_to("r2")
    found = previous_environments(reports, ["a", "b", "c"])
    assert {name: p.run_id for name, p in found.items()} == {"a": "r2", "b": "r1"}
    assert previous_environments(tmp_path / "nowhere", ["a"]) == {}


def test_image_changes_are_stored_and_shown(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    before = _fp({"libc6": "2.36-9", "gone": "1"}, {"numpy": "1.26.4"})
    after = _fp({"libc6": "2.36-10", "new": "2"}, {"numpy": "1.26.4"})
    _save(reports, "r1", ("a", "sha256:1", before), ("b", "sha256:1", before), mtime=1000)
    previous = previous_environments(reports, ["a", "b"])
    run_dir = reports / "r2"
    envs: list[EnvironmentResult] = [
        dataclasses.replace(stored_env(run_dir, "a", {}, fingerprint=after), image_id="sha256:2"),
        dataclasses.replace(stored_env(run_dir, "b", {}, fingerprint=before), image_id="sha256:1"),
    ]
    result = with_image_changes(stored_run(run_dir, tuple(envs)), previous)
    a, b = result.environments
    assert b.image_change is None  # the same image: nothing to record
    assert a.image_change is not None and a.image_change.previous_image == "sha256:1"
    assert [(p.package, p.before, p.after) for p in a.image_change.packages] == [
        ("gone", "1", None), ("libc6", "2.36-9", "2.36-10"), ("new", None, "2")]  # fmt: skip
    save_run(result, latest=False)
    assert load_run(run_dir).environments == result.environments  # run.json round trip
    report = {"environments": [environment_json(e) for e in result.environments]}
    assert image_change_lines(report) == [
        "a: image changed since run r1: 3 package(s) (gone 1 -> -, libc6 2.36-9 -> 2.36-10, "
        "new - -> 2)"
    ]
    assert image_change_lines(report, shown=1)[0].endswith("(gone 1 -> -, and 2 more)")
