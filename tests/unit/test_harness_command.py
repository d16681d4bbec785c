"""Command mode in the harness, on the host interpreter: placeholder substitution, the command's
environment, probe records joined into probes/all.npz, the fingerprint of the command's own
processes (not the harness's), and explain reading a command's probes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeEngine, Mounted, outcome

from reprocheck import explain
from reprocheck.config import load_config
from reprocheck.explain import Explainer, first_divergent_stage
from reprocheck.harness import fingerprint, reprocheck_probe
from reprocheck.harness import run as harness
from reprocheck.plan import make_plan
from reprocheck.runner import Runner

HARNESS = Path(harness.__file__).resolve()
SITE = HARNESS.parent / "command_site" / "sitecustomize.py"
VALUES = {"inputs": "/fixtures", "outputs": "/out"}


# --------------------------------------------------------------------------- substitution


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("{inputs}", "/fixtures"),
        ("{outputs}", "/out"),
        ("--in={inputs}", "--in=/fixtures"),
        ("{inputs}{outputs}", "/fixtures/out"),
        ("{", "{"),
        ("}", "}"),
        ("}}", "}}"),
        ("{{", "{{"),
        ("{{inputs}}", "{/fixtures}"),
        ("{0}", "{0}"),
        ("{}", "{}"),
        ("{input}", "{input}"),
        ("{INPUTS}", "{INPUTS}"),
        ("{ inputs }", "{ inputs }"),
        ("{'a': 1}", "{'a': 1}"),
        ("print({'accuracy': 0.9}['accuracy'])", "print({'accuracy': 0.9}['accuracy'])"),
        ('json.dump({"n": 1}, open("{outputs}/m.json", "w"))',
         'json.dump({"n": 1}, open("/out/m.json", "w"))'),
        ("%s %(x)s $HOME \\1 \\g<0>", "%s %(x)s $HOME \\1 \\g<0>"),
    ],
)  # fmt: skip
def test_only_the_two_placeholders_are_replaced(part: str, expected: str) -> None:
    assert harness.substitute(part, VALUES) == expected


def test_values_are_not_scanned_again() -> None:
    """One pass: a path holding a placeholder or regex escapes is put in as it is."""
    values = {"inputs": "/in/{outputs}", "outputs": r"/o\1ut/{inputs}"}
    assert harness.substitute("{inputs} {outputs}", values) == r"/in/{outputs} /o\1ut/{inputs}"


def test_command_argv() -> None:
    argv = harness.command_argv(["python3", "-c", "x = {'k': 1}", "{inputs}", "{outputs}"],
                                "/fixtures", "/out")  # fmt: skip
    assert argv == ["python3", "-c", "x = {'k': 1}", "/fixtures", "/out"]


def test_command_environment_puts_the_site_first_and_the_harness_last() -> None:
    base = {"PYTHONPATH": os.pathsep.join([str(HARNESS.parent), "/mine", ""]), "HOME": "/tmp"}
    env = harness.command_environment(base, "/meta/p", "/meta/q")
    assert env["PYTHONPATH"].split(os.pathsep) == [harness.COMMAND_SITE, "/mine", harness.HERE]
    assert env["HOME"] == "/tmp"
    assert env[harness.PROBE_RECORDS_ENV] == "/meta/p"
    assert env[harness.PROCESS_RECORDS_ENV] == "/meta/q"
    assert harness.command_environment({}, "p", "q")["PYTHONPATH"] == os.pathsep.join(
        [harness.COMMAND_SITE, harness.HERE]
    )


def test_the_names_agree_across_harness_probe_and_explain() -> None:
    assert harness.COMMAND_FIXTURE == reprocheck_probe.COMMAND_FIXTURE == explain.COMMAND_PROBES
    assert harness.PROBE_RECORDS_ENV == reprocheck_probe.RECORDS_ENV
    assert harness.RECORD_KEY == reprocheck_probe.RECORD_KEY
    assert f'RECORDS_ENV = "{harness.PROCESS_RECORDS_ENV}"' in SITE.read_text()
    assert Path(harness.COMMAND_SITE) == SITE.parent


# --------------------------------------------------------------------------- probe records


def test_records_join_in_order_with_callable_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setattr(reprocheck_probe, "_current", None)
    monkeypatch.setenv(reprocheck_probe.RECORDS_ENV, str(records))
    reprocheck_probe.record("decoded", np.arange(3, dtype=np.uint8))
    reprocheck_probe.record("file", 2.5)  # np.savez's own parameter name
    reprocheck_probe.record("decoded", [[1.0]])
    (records / "junk.npz").write_bytes(b"not a zip")
    (records / "half.tmp").write_bytes(b"")
    (records / "zz-link.npz").symlink_to(records / "junk.npz")
    target = harness.join_probe_records(str(records), str(tmp_path / "probes"))
    assert target == str(tmp_path / "probes" / "all.npz")
    assert not records.exists()
    with np.load(target, allow_pickle=False) as probes:
        assert probes.files == ["000:decoded", "001:file", "002:decoded#2"]
        np.testing.assert_array_equal(probes["000:decoded"], [0, 1, 2])
        assert probes["000:decoded"].dtype == np.uint8
        assert probes["001:file"] == 2.5
        np.testing.assert_array_equal(probes["002:decoded#2"], [[1.0]])


def test_no_records_no_probes(tmp_path: Path) -> None:
    (tmp_path / "records").mkdir()
    assert harness.join_probe_records(str(tmp_path / "records"), str(tmp_path / "probes")) is None
    assert harness.join_probe_records(str(tmp_path / "absent"), str(tmp_path / "probes")) is None
    assert not (tmp_path / "probes").exists()


def test_record_outside_a_run_does_nothing(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(reprocheck_probe, "_current", None)
    monkeypatch.delenv(reprocheck_probe.RECORDS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    reprocheck_probe.record("x", 1)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the harness, run


def _harness(tmp_path: Path, command: list[str], env: dict[str, str] | None = None,
             deadline: float | None = None, code: int = 0) -> Path:  # fmt: skip
    """Run the harness (as the container does) on ``command``; its meta folder."""
    folders = {name: tmp_path / name for name in ("meta", "out", "fixtures", "project")}
    for folder in folders.values():
        folder.mkdir()
    spec = {"mode": "command", "callable": None, "command": command,
            "project": str(folders["project"]), "fixtures_dir": str(folders["fixtures"]),
            "fixtures": [], "outputs": str(folders["out"]), "meta": str(folders["meta"]),
            "deadline": deadline}  # fmt: skip
    (folders["meta"] / "spec.json").write_text(json.dumps(spec))
    environment = {**os.environ, "PYTHONPATH": str(HARNESS.parent), **(env or {})}
    done = subprocess.run([sys.executable, str(HARNESS), str(folders["meta"])], env=environment,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == code, done.stdout + done.stderr
    return folders["meta"]


def _opencv(libraries: list[str]) -> list[str]:
    return [p for p in libraries if "opencv" in p.lower() or "cv2" in Path(p).name]


PYTHON_PIPELINE = """
import json, os, subprocess, sys
import numpy as np
import reprocheck_probe

reprocheck_probe.record("decoded", np.arange(4))
subprocess.run([sys.executable, "-c",
                "import reprocheck_probe; reprocheck_probe.record('child', [1.5])"], check=True)
reprocheck_probe.record("scored", {'accuracy': 0.5}['accuracy'])
json.dump({'accuracy': 0.5}, open(os.path.join(sys.argv[1], "metrics.json"), "w"))
"""


def test_a_python_command_records_probes_and_its_own_libraries(tmp_path: Path) -> None:
    pytest.importorskip("cv2")  # the harness imports cv2 for its own description: must not count
    meta = _harness(tmp_path, [sys.executable, "-c", PYTHON_PIPELINE, "{outputs}"])
    status = json.loads((meta / "status.json").read_text())
    assert status["command"]["status"] == "ok"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"accuracy": 0.5}
    with np.load(meta / "probes" / "all.npz") as probes:
        assert probes.files == ["000:decoded", "001:child", "002:scored"]
    left = sorted(p.name for p in meta.iterdir())
    assert left == ["fingerprint.json", "probes", "spec.json", "status.json"]  # records removed
    fp = json.loads((meta / "fingerprint.json").read_text())
    libraries = fp["loaded_libraries"]
    assert any("_multiarray_umath" in p for p in libraries)
    assert _opencv(libraries) == []
    assert fp["numpy"]["preloaded"] is True
    assert fp["cv2"] == {"version": None, "file": importlib.util.find_spec("cv2").origin,
                         "preloaded": False, "imported": False}  # fmt: skip
    processes = fp["pipeline_processes"]
    assert processes["count"] == 2
    parent, child = processes["listed"]
    assert "exit" in parent["seen"] and "exit" in child["seen"]
    assert parent["modules"]["numpy"]["version"] == np.__version__
    assert parent["argv"][0] == "-c"
    assert set(fp["library_packages"]) == set(libraries)


def test_what_a_command_recorded_before_its_deadline_is_kept(tmp_path: Path) -> None:
    code = "import reprocheck_probe, time; reprocheck_probe.record('early', 1); time.sleep(60)"
    meta = _harness(tmp_path, [sys.executable, "-c", code], deadline=1.5,
                    code=harness.EXIT_DEADLINE)  # fmt: skip
    with np.load(meta / "probes" / "all.npz") as probes:
        assert probes.files == ["000:early"]
    assert sorted(p.name for p in meta.iterdir()) == ["probes", "spec.json", "status.json",
                                                      "watchdog.json"]  # fmt: skip


def test_a_command_that_imports_cv2_shows_it(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    meta = _harness(tmp_path, [sys.executable, "-c", "import cv2"])
    fp = json.loads((meta / "fingerprint.json").read_text())
    assert _opencv(fp["loaded_libraries"]) != []
    assert fp["cv2"]["preloaded"] is True
    assert fp["cv2"]["build"]["JPEG"]  # described in full: it may have moved an output


def test_a_process_that_leaves_no_record_is_sampled(tmp_path: Path) -> None:
    """A shell (no Python) and a Python that ends by os._exit (no atexit): /proc sampling."""
    code = "import numpy, os, time; time.sleep(0.5); os._exit(0)"
    meta = _harness(tmp_path, ["sh", "-c", f'sleep 0.3; {sys.executable} -c "{code}"'])
    fp = json.loads((meta / "fingerprint.json").read_text())
    listed = fp["pipeline_processes"]["listed"]
    assert {tuple(p["seen"]) for p in listed} == {("sampled",)}  # sh, sleep, python
    assert any("python" in Path(p["executable"]).name for p in listed)
    assert any(Path(p).name.startswith("libc") for p in fp["loaded_libraries"])
    assert any("_multiarray_umath" in p for p in fp["loaded_libraries"])
    assert fp["numpy"]["preloaded"] is True  # from what it mapped


def test_the_hidden_sitecustomize_still_runs(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text(
        "import os\nopen(os.environ['MARK'] + '.' + str(os.getpid()), 'w').close()\n"
    )
    mark = tmp_path / "mark"
    path = os.pathsep.join([str(HARNESS.parent), str(theirs)])
    code = "import os; open(os.environ['MARK'] + '.command', 'w').write(str(os.getpid()))"
    _harness(tmp_path, [sys.executable, "-c", code], {"PYTHONPATH": path, "MARK": str(mark)})
    command = (tmp_path / "mark.command").read_text()
    assert (tmp_path / f"mark.{command}").exists()


def test_a_command_that_cannot_start_has_no_libraries(tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    for name in ("meta", "out", "fixtures"):
        (tmp_path / name).mkdir()
    spec = {"mode": "command", "command": ["/no/such/program"], "project": str(tmp_path),
            "fixtures_dir": str(tmp_path / "fixtures"), "outputs": str(tmp_path / "out"),
            "meta": str(meta), "deadline": None}  # fmt: skip
    (meta / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(HARNESS), str(meta)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == harness.EXIT_HARNESS_ERROR
    fp = json.loads((meta / "fingerprint.json").read_text())
    assert fp["loaded_libraries"] == []
    assert fp["pipeline_processes"] == {"count": 0, "listed": []}
    assert sorted(p.name for p in meta.iterdir()) == ["fingerprint.json", "spec.json",
                                                      "status.json"]  # fmt: skip


@pytest.mark.parametrize("pipeline_imports", ["", "import cv2; "])
def test_callable_mode_describes_cv2_in_full_only_when_the_pipeline_imported_it(
    pipeline_imports: str,
) -> None:
    code = (
        f"import sys, json; {pipeline_imports}sys.path.insert(0, sys.argv[1]); "
        "import fingerprint; fp = fingerprint.collect(); "
        "print(json.dumps([fp, 'cv2' in sys.modules]))"
    )
    pytest.importorskip("cv2")
    done = subprocess.run([sys.executable, "-c", code, str(HARNESS.parent)], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    fp, imported = json.loads(done.stdout)
    used = bool(pipeline_imports)
    assert imported is used  # the fingerprint imports cv2 only when the pipeline did
    assert fp["cv2"]["preloaded"] is used
    assert bool(fp["cv2"]["version"]) is used
    assert ("build" in fp["cv2"]) is used
    assert fp["cv2"]["file"] == importlib.util.find_spec("cv2").origin
    assert (_opencv(fp["loaded_libraries"]) != []) is used  # its own imports never count


def test_processes_summary_is_bounded() -> None:
    processes = [{"pid": n, "start": str(n), "files": ["/lib/libc.so.6"], "seen": ["sampled"]}
                 for n in range(100)]  # fmt: skip
    fp = fingerprint.collect(processes=processes)
    assert fp["pipeline_processes"]["count"] == 100
    assert len(fp["pipeline_processes"]["listed"]) == fingerprint.PROCESSES_LISTED
    assert fp["loaded_libraries"] == ["/lib/libc.so.6"]


# --------------------------------------------------------------------------- explain


def test_first_divergent_stage_of_a_command(tmp_path: Path) -> None:
    for side, last in (("a", 1.0), ("b", 2.0)):
        (tmp_path / side / "probes").mkdir(parents=True)
        np.savez(tmp_path / side / "probes" / "all.npz",
                 **{"000:decoded": np.ones(2), "001:scored": np.float64(last)})  # fmt: skip
    stage = first_divergent_stage(tmp_path / "a", tmp_path / "b", "all", "the command")
    assert stage is not None
    assert stage[0] == "scored"
    assert stage[1].startswith("first divergent recorded stage of the command: scored")
    assert "identical before it: decoded" in stage[1]


COMMAND_CONFIG = """
[pipeline]
command = ["python3", "eval.py", "{inputs}", "{outputs}"]
[fixtures]
path = "inputs"
[[environments]]
name = "old"
image = "img/old:1"
[[environments]]
name = "new"
image = "img/new:1"
"""


def test_explain_uses_a_commands_probes_for_every_output(make_project, no_host_ca) -> None:
    def behaviour(value: float) -> Any:
        def run(box: Mounted) -> Any:
            box.write_outputs("scores", probabilities=np.array([0.25, value]))
            probes = box.meta / "probes"
            probes.mkdir()
            np.savez(probes / "all.npz", **{"000:decoded": np.ones(2),
                                            "001:logits": np.array([value])})  # fmt: skip
            box.write_status({})
            (box.meta / "fingerprint.json").write_text(json.dumps({"glibc": "2.36"}))
            return outcome(0)

        return run

    config = load_config(make_project(COMMAND_CONFIG, {"inputs/x.jpg": "x", "eval.py": ""}))
    engine = FakeEngine(behaviours={"old": behaviour(0.5), "new": behaviour(0.75)})
    for env in config.environments:
        engine.add(env.image)
    run = Runner(engine, make_plan(config), run_id="run-1").run(config.reports_dir / "run-1")
    explanation = Explainer(engine, config, run, max_experiments=0).explain()
    (attribution,) = explanation.attributions
    assert attribution.output == "scores/probabilities"
    assert attribution.fixture is None
    stage = next(c for c in attribution.causes if c.kind == "stage")
    assert stage.factor == "logits"
    assert "of the command: logits" in stage.evidence


def test_the_site_module_alone_only_chains() -> None:
    """Imported with no records folder (not a command's process), it only chains."""
    code = "import sitecustomize; print(sitecustomize.__file__)"
    env = {**os.environ, "PYTHONPATH": str(SITE.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)  # fmt: skip
    assert done.stdout.strip() == str(SITE)
