"""Fixtures' states as the harness journals them (status.jsonl): a run of many fixtures writes
status.json twice, not twice per fixture, and a crash still tells which fixtures finished
and which one was running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reprocheck.harness import run as harness
from reprocheck.run_model import status_bytes
from reprocheck.runner import JOURNAL_FILE, _fixture_results, _read_json, _with_journal

HARNESS = Path(harness.__file__).resolve()
PIPELINE = """
import os, signal

def run(path):
    if path.endswith("c.bin"):
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    return {"n": 1.0}
"""


def _callable_run(tmp_path: Path, fixtures: list[str], pipeline: str = PIPELINE) -> Path:
    folders = {name: tmp_path / name for name in ("meta", "out", "fixtures", "project")}
    for folder in folders.values():
        folder.mkdir()
    for name in fixtures:
        (folders["fixtures"] / name).write_text(name)
    (folders["project"] / "p.py").write_text(pipeline)
    spec = {"mode": "callable", "callable": "p.py:run", "command": None,
            "project": str(folders["project"]), "fixtures_dir": str(folders["fixtures"]),
            "fixtures": fixtures, "outputs": str(folders["out"]), "meta": str(folders["meta"]),
            "deadline": None}  # fmt: skip
    (folders["meta"] / "spec.json").write_text(json.dumps(spec))
    environment = {**os.environ, "PYTHONPATH": str(HARNESS.parent)}
    subprocess.run([sys.executable, str(HARNESS), str(folders["meta"])], env=environment,
                   capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    return folders["meta"]


def test_the_journal_tells_what_a_killed_run_finished(tmp_path: Path) -> None:
    planned = ["a.bin", "b.bin", "c.bin", "d.bin"]
    meta = _callable_run(tmp_path, planned)
    status = _read_json(meta / "status.json")
    assert status["fixtures"] == {} and status["finished"] is None  # as written at the start
    results = _fixture_results(_with_journal(status, meta, len(planned)), planned)
    assert [r.status for r in results] == ["ok", "ok", "running", "not_run"]
    assert results[0].seconds is not None


def test_a_finished_run_writes_its_status_whole(tmp_path: Path) -> None:
    planned = [f"f{i:04d}.bin" for i in range(300)]
    meta = _callable_run(tmp_path, planned)
    status = _read_json(meta / "status.json")
    assert status["finished"] is not None
    assert [r.status for r in _fixture_results(status, planned)] == ["ok"] * 300
    lines = (meta / JOURNAL_FILE).read_text().splitlines()
    assert len(lines) == 600  # running, then the result, per fixture
    assert _with_journal(status, meta, 300) is status  # not read when the run finished


def test_lines_the_pipeline_wrote_are_passed_over(tmp_path: Path) -> None:
    meta = tmp_path
    (meta / JOURNAL_FILE).write_text("\n".join([
        json.dumps({"fixture": "a", "entry": {"status": "ok", "seconds": 1}}),
        "not json", "[" * 100_000, json.dumps(["fixture", "b"]),
        json.dumps({"fixture": 3, "entry": {}}), json.dumps({"fixture": "b", "entry": "ok"}),
        json.dumps({"fixture": "b", "entry": {"status": "running"}}),
    ]))  # fmt: skip
    status = _with_journal({"finished": None, "fixtures": []}, meta, 2)
    assert status["fixtures"] == {"a": {"status": "ok", "seconds": 1}, "b": {"status": "running"}}
    (meta / JOURNAL_FILE).unlink()
    (meta / JOURNAL_FILE).symlink_to("/etc/passwd")
    assert _with_journal({"finished": None}, meta, 2) == {"finished": None}
    (meta / JOURNAL_FILE).unlink()
    with (meta / JOURNAL_FILE).open("wb") as handle:  # past the plan's allowance
        handle.truncate(status_bytes(2) + 1)
    assert _with_journal({"finished": None}, meta, 2) == {"finished": None}
