"""The fault tier: every way a run can go wrong, on the real Docker Engine, through the CLI.

Each test is one case of the robustness issue: what is kept when something fails, and which
exit code says so. Environments are the bookworm image with different environment variables,
so the tier costs one image and about a second per container.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT, debian_image, write_project

pytestmark = pytest.mark.docker

RUN_LABEL = "io.reprocheck.run"
# The CLI of this checkout, whatever copy of reprocheck is installed.
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def config(pipeline: str, envs: dict[str, dict[str, str]], extra: str = "") -> str:
    """A project config: ``pipeline`` is the [pipeline] body; ``envs`` name -> env vars."""
    text = f"[pipeline]\n{pipeline}\n[fixtures]\npath = 'inputs'\n{extra}\n"
    for name, variables in envs.items():
        env = ", ".join(f'{k} = "{v}"' for k, v in variables.items())
        text += f'[[environments]]\nname = "{name}"\nimage = "{debian_image("bookworm")}"\n'
        text += f"env = {{ {env} }}\n"
    return text


def project(root: Path, pipeline_code: str, envs: dict[str, dict[str, str]], *,
            command: bool = False, extra: str = "") -> Path:  # fmt: skip
    if command:
        body = 'command = ["python3", "p.py", "{inputs}", "{outputs}"]'
    else:
        body = 'callable = "p.py:run"'
    write_project(root, config(body, envs, extra),
                  {"inputs/one.bin": "abc", "p.py": pipeline_code})  # fmt: skip
    return root


def reprocheck(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprocheck", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def report(root: Path) -> dict[str, Any]:
    return json.loads((root / "reports" / "latest" / "report.json").read_text())


def run_with_errors(root: Path) -> dict[str, Any]:
    """`reprocheck run` that must end in exit 2 without a traceback; its report."""
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    return report(root)


def verdicts(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(c["output"], c["candidate"]): c["verdict"] for c in data["comparisons"]}


def history_rows(root: Path) -> int:
    import pandas as pd

    return int(pd.read_parquet(root / "reports" / "history.parquet")["count"].sum())


TWO = {"a": {"SHIFT": "0"}, "b": {"SHIFT": "1"}}


# --------------------------------------------------------------------------- 1. scalars

SCALARS_CALLABLE = """
import os
import numpy as np

def run(path):
    shift = int(os.environ["SHIFT"])
    return {"accuracy": 0.9712 + shift * 4e-4, "count": 360 + shift, "np_scalar": np.float64(shift),
            "flag": bool(shift), "same": 1.5, "nested": {"loss": np.float32(0.25) + shift}}
"""

SCALARS_COMMAND = """
import json, os, sys
import numpy as np
shift = int(os.environ["SHIFT"])
out = sys.argv[2]
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"accuracy": 0.9712 + shift * 4e-4, "n": 360, "ok": True}, f)
np.savez(os.path.join(out, "s.npz"), zero_d=np.asarray(1.0 + shift), f64=np.float64(shift))
np.save(os.path.join(out, "scalar.npy"), np.asarray(shift, dtype=np.int32))
"""


@pytest.mark.parametrize(
    ("code", "command"),
    [(SCALARS_CALLABLE, False), (SCALARS_COMMAND, True)],
    ids=["callable", "command"],
)
def test_changing_scalars_are_drift_not_a_crash(docker_engine, debian_bases, tmp_path: Path,
                                                code: str, command: bool) -> None:  # fmt: skip
    root = project(tmp_path / "p", code, TWO, command=command,
                   extra='[tolerance]\n"*/accuracy" = { atol = 1e-3 }\n')  # fmt: skip
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    found = verdicts(report(root))
    if command:
        assert found == {
            ("metrics/accuracy", "b"): "within_tolerance", ("metrics/n", "b"): "identical",
            ("metrics/ok", "b"): "identical", ("s/zero_d", "b"): "drift",
            ("s/f64", "b"): "drift", ("scalar", "b"): "drift",
        }  # fmt: skip
    else:
        assert found == {
            ("one.bin/accuracy", "b"): "within_tolerance", ("one.bin/count", "b"): "drift",
            ("one.bin/np_scalar", "b"): "drift", ("one.bin/flag", "b"): "drift",
            ("one.bin/same", "b"): "identical", ("one.bin/nested/loss", "b"): "drift",
        }  # fmt: skip
    assert history_rows(root) == len(found)
    for name in ("report.md", "report.html", "run.json"):
        assert (root / "reports" / "latest" / name).is_file()


# --------------------------------------------------------------------------- 2. bad outputs

BAD_OUTPUTS = """
import os, sys
import numpy as np
out = sys.argv[2]
np.save(os.path.join(out, "good.npy"), np.arange(4.0))
np.savez(os.path.join(out, "objects.npz"), obj=np.array([{"a": 1}], dtype=object), fine=np.ones(2))
np.save(os.path.join(out, "text.npy"), np.array(["a", "b"]))
np.save(os.path.join(out, "raw.npy"), np.array([b"xy"]))
with open(os.path.join(out, "garbage.npz"), "wb") as f:
    f.write(b"PK\\x03\\x04 this is not a zip")
with open(os.path.join(out, "broken.json"), "w") as f:
    f.write("{ not json")
"""


def test_unreadable_outputs_are_per_output_errors(docker_engine, debian_bases,
                                                  tmp_path: Path) -> None:  # fmt: skip
    root = project(tmp_path / "p", BAD_OUTPUTS, TWO, command=True)
    data = run_with_errors(root)
    found = verdicts(data)
    assert found[("good", "b")] == "identical"
    assert found[("objects/fine", "b")] == "identical"
    for bad in ("objects/obj", "text", "raw", "garbage", "broken"):
        assert found[(bad, "b")] == "error", (bad, found)
    notes = {c["output"]: c.get("note") or "" for c in data["comparisons"]}
    assert "pickle" in notes["objects/obj"]
    assert "dtype" in notes["text"]
    assert history_rows(root) == len(found)
    assert (root / "reports" / "latest" / "report.html").is_file()


def test_an_unexpected_exception_after_the_containers_still_stores_the_run(
    docker_engine, debian_bases, tmp_path: Path
) -> None:
    root = project(tmp_path / "p", SCALARS_CALLABLE, TWO)
    inject = ("import sys, reprocheck.cli as c, reprocheck.stages as s\n"
              "def boom(*a, **k):\n    raise RuntimeError('injected fault')\n"
              "s.build_matrix = boom\nsys.argv = ['reprocheck', 'run']\nc.main()\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", inject], cwd=root, capture_output=True, env=ENV,
                          text=True, timeout=600)  # fmt: skip
    no_traceback(proc)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "injected fault" in line and "error.log" in line, proc.stderr
    latest = root / "reports" / "latest"
    assert json.loads((latest / "run.json").read_text())["environments"][1]["status"] == "ok"
    assert "Traceback" in (latest / "error.log").read_text()
    again = reprocheck(root, "compare")  # the containers' work is not lost
    assert again.returncode == 1, again.stderr


# --------------------------------------------------------------------------- 3. symlinks

LINKS = """
import os, sys
import numpy as np
out = sys.argv[2]
np.save(os.path.join(out, "good.npy"), np.arange(3))
os.symlink(os.environ["SECRET_FILE"], os.path.join(out, "leak.json"))
os.symlink(os.environ["SECRET_DIR"], os.path.join(out, "leakdir"))
os.mkfifo(os.path.join(out, "fifo.npy"))
"""


def test_links_in_outputs_are_never_followed(docker_engine, debian_bases, tmp_path: Path) -> None:
    secret_dir = tmp_path / "host-secrets"
    secret_dir.mkdir()
    (secret_dir / "secret.json").write_text('{"secret_key": 42}')
    np_secret = secret_dir / "weights.npy"
    import numpy as np

    np.save(np_secret, np.arange(5))
    paths = {"SECRET_FILE": str(secret_dir / "secret.json"), "SECRET_DIR": str(secret_dir)}
    envs = {"a": paths, "b": paths}
    root = project(tmp_path / "p", LINKS, envs, command=True)
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    data = report(root)
    text = json.dumps(data)
    assert "secret_key" not in text and "weights" not in text
    found = verdicts(data)
    assert found[("good", "b")] == "identical"
    assert found[("leak", "b")] == "error"
    assert found[("leakdir", "b")] == "error"
    assert found[("fifo", "b")] == "error"
    note = next(c["note"] for c in data["comparisons"] if c["output"] == "leak")
    assert "symbolic link" in note
    saved = reprocheck(root, "baseline", "save", "golden")
    assert saved.returncode == 0, saved.stderr
    outputs = root / "baselines" / "golden" / "environments" / "a" / "outputs"
    assert (outputs / "leak.json").is_symlink()
    assert (outputs / "leakdir").is_symlink()
    run_dir = (root / "reports" / "latest").resolve()  # merge skips links: the folder itself
    merged = reprocheck(root, "merge", str(run_dir), "--out", "merged")
    assert (root / "merged" / "environments" / "a" / "outputs" / "leakdir").is_symlink()
    assert "secret_key" not in (root / "merged" / "report.json").read_text(), merged.stderr


# --------------------------------------------------------------------------- 4. bombs

BOMB = """
import os, sys, zipfile
import numpy as np
out = sys.argv[2]
np.save(os.path.join(out, "small.npy"), np.arange(3))
if os.environ["BOMB"] == "1":
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (2**28,)  # 1 GiB of float32 zeros, about 1 MB compressed
    with zipfile.ZipFile(os.path.join(out, "bomb.npz"), "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("big.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(2**24)
            for _ in range(2**30 // 2**24):
                f.write(chunk)
else:
    np.savez(os.path.join(out, "bomb.npz"), big=np.zeros(4, np.float32))
"""

MEASURED = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "reprocheck", "run"])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, proc.returncode)
"""


def peak_of_run(root: Path) -> tuple[int, int]:
    """(peak host memory in KB, exit code) of `reprocheck run` in ``root``."""
    proc = subprocess.run([sys.executable, "-c", MEASURED], cwd=root, capture_output=True, env=ENV,
                          text=True, timeout=900)  # fmt: skip
    no_traceback(proc)
    peak_kb, code = (int(x) for x in proc.stdout.split()[-2:])
    return peak_kb, code


def test_decompression_bomb_is_refused_with_little_memory(docker_engine, debian_bases,
                                                          tmp_path: Path) -> None:  # fmt: skip
    envs = {"a": {"BOMB": "0"}, "b": {"BOMB": "1"}}
    root = project(tmp_path / "p", BOMB, envs, command=True)
    control = project(tmp_path / "control", BOMB, {"a": {"BOMB": "0"}, "b": {"BOMB": "0"}},
                      command=True)  # fmt: skip
    peak_kb, code = peak_of_run(root)
    assert code == 2
    bomb = root / "reports" / "latest" / "environments" / "b" / "outputs" / "bomb.npz"
    assert bomb.stat().st_size < 5 * 2**20
    data = report(root)
    found = verdicts(data)
    assert found[("small", "b")] == "identical"
    assert found[("bomb/big", "b")] == "error"
    note = next(c["note"] for c in data["comparisons"] if c["output"] == "bomb/big")
    assert "max_array_bytes" in note
    control_kb, control_code = peak_of_run(control)
    assert control_code == 0  # the same outputs, every one read and compared
    # The 1 GiB array is never inflated: the run needs what a run without it needs (about
    # 190 MB, most of it pandas, pyarrow and matplotlib), not a GiB more.
    assert peak_kb < control_kb + 50 * 1024, (peak_kb, control_kb)
    assert peak_kb < 250 * 1024, f"peak host memory {peak_kb / 1024:.0f} MB"


# --------------------------------------------------------------------------- 5. interrupts

SLEEPER = """
import os, time
def run(path):
    time.sleep(float(os.environ["SLEEP"]))
    return {"x": 1.0}
"""


def run_containers(client: Any, run_id: str) -> list[dict[str, Any]]:
    """The containers of ``run_id`` as the list call gives them (no per-container inspect,
    which fails when a container is removed meanwhile)."""
    return client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})


def wait_for_container(client: Any, run_id: str, env: str, seconds: float = 120) -> Any:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        running = [c for c in run_containers(client, run_id) if c["State"] == "running"
                   and (c.get("Labels") or {}).get("io.reprocheck.environment") == env]  # fmt: skip
        if running:
            return client.containers.get(running[0]["Id"])
        time.sleep(0.2)
    raise AssertionError(f"no container of run {run_id} started")


def start_run(root: Path, run_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "reprocheck", "run", "--out",
                             f"reports/{run_id}", *args], cwd=root, stdout=subprocess.PIPE, env=ENV,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_containers_and_keeps_what_finished(
    docker_engine, debian_bases, docker_client, tmp_path: Path, signum: int
) -> None:
    envs = {"quick": {"SLEEP": "0"}, "slow": {"SLEEP": "600"}, "later": {"SLEEP": "0"}}
    root = project(tmp_path / "p", SLEEPER, envs)
    run_id = f"interrupt-{signum}-{secrets.token_hex(4)}"  # never a leftover's label
    proc = start_run(root, run_id, "--jobs", "1")  # one after another: "later" never starts
    wait_for_container(docker_client, run_id, "slow")  # "quick" ran first
    sent = time.monotonic()
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 15
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert run_containers(docker_client, run_id) == []
    manifest = json.loads((root / "reports" / run_id / "run.json").read_text())
    statuses = {e["name"]: e["status"] for e in manifest["environments"]}
    assert statuses == {"quick": "ok", "slow": "interrupted", "later": "interrupted"}


def test_a_killed_reprocheck_leaves_no_unbounded_container(
    docker_engine, debian_bases, docker_client, tmp_path: Path
) -> None:
    root = project(tmp_path / "p", SLEEPER, {"slow": {"SLEEP": "600"}},
                   extra="[run]\ntimeout = 4\n")  # fmt: skip
    killed, alive = (f"{what}-{secrets.token_hex(4)}" for what in ("killed", "alive"))
    proc = start_run(root, killed)
    container = wait_for_container(docker_client, killed, "slow")
    proc.kill()  # SIGKILL: no cleanup runs on the host
    proc.communicate(timeout=30)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.5)
    assert container.status == "exited", "the container outlived its timeout"
    assert container.attrs["State"]["ExitCode"] == 124
    # a sweep removes it (its owner is gone) but not the container of a run in progress
    other = project(tmp_path / "q", SLEEPER, {"slow": {"SLEEP": "600"}})
    running = start_run(other, alive)
    try:
        wait_for_container(docker_client, alive, "slow")
        swept = reprocheck(root, "sweep")
        assert swept.returncode == 0, swept.stderr
        assert run_containers(docker_client, killed) == []
        assert len(run_containers(docker_client, alive)) == 1
    finally:
        running.send_signal(signal.SIGINT)
        running.communicate(timeout=60)
    assert run_containers(docker_client, alive) == []


def test_timeout_is_reported_as_timeout(docker_engine, debian_bases, tmp_path: Path) -> None:
    root = project(tmp_path / "p", SLEEPER, {"a": {"SLEEP": "0"}, "b": {"SLEEP": "600"}},
                   extra="[run]\ntimeout = 3\n")  # fmt: skip
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2
    statuses = {e["name"]: e["status"] for e in report(root)["environments"]}
    assert statuses == {"a": "ok", "b": "timeout"}


# --------------------------------------------------------------------------- 6. damaged state

SAME = """
def run(path):
    return {"x": 1.0}
"""


def test_damaged_stored_state_gives_one_line(docker_engine, debian_bases, tmp_path: Path) -> None:
    root = project(tmp_path / "p", SAME, TWO)
    first = reprocheck(root, "run")
    assert first.returncode == 0, first.stderr
    assert reprocheck(root, "baseline", "save", "golden").returncode == 0
    history = root / "reports" / "history.parquet"
    (part,) = history.glob("run-*.parquet")  # the first run's rows
    part.write_bytes(part.read_bytes()[:40])
    # --no-cache: a run of its own (with nothing changed, it would be the first run again,
    # reading and writing no history; saving a baseline changes nothing a container sees)
    second = reprocheck(root, "run", "--no-cache")
    no_traceback(second)
    assert second.returncode == 0, second.stderr
    assert "history" in second.stderr and "warning" in second.stderr
    assert history_rows(root) == 1
    assert list(history.parent.glob("history.parquet.run-*.damaged*"))  # beside the folder
    assert reprocheck(root, "history").returncode == 0
    latest = (root / "reports" / "latest").resolve()
    for folder in (latest, root / "baselines" / "golden"):
        fingerprint = folder / "environments" / "b" / "meta" / "fingerprint.json"
        fingerprint.write_text(fingerprint.read_text()[:50])
    for args in (("compare",), ("diff", latest.name, latest.name),
                 ("run", "--baseline", "golden")):  # fmt: skip
        proc = reprocheck(root, *args)
        no_traceback(proc)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    compare = reprocheck(root, "compare")
    assert "fingerprint.json" in compare.stderr
    (latest / "run.json").write_text('{"run_id": 3, "environments": {}}')
    proc = reprocheck(root, "compare")
    no_traceback(proc)
    assert proc.returncode == 2 and "run.json" in proc.stderr


# --------------------------------------------------------------------------- 7. concurrency


def test_concurrent_runs_lose_no_history_row(docker_engine, debian_bases, tmp_path: Path) -> None:
    root = project(tmp_path / "p", SAME, TWO)
    rounds, parallel = 2, 3
    for _ in range(rounds):
        # --no-cache: every run compares and appends (a run that changed nothing would be
        # the earlier run again, with no row of its own)
        command = [sys.executable, "-m", "reprocheck", "run", "-q", "--no-cache"]
        procs = [subprocess.Popen(command, cwd=root, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for _ in range(parallel)]  # fmt: skip
        for proc in procs:
            _out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
    runs = [p for p in (root / "reports").iterdir() if (p / "run.json").is_file()
            and not p.is_symlink()]  # fmt: skip
    assert len(runs) == rounds * parallel
    assert history_rows(root) == rounds * parallel  # one output, one pair per run


# --------------------------------------------------------------------------- 8. config


@pytest.mark.parametrize(
    ("image", "limits", "expected"),
    [
        ("images/Debian-Trixie", "", "images/Debian-Trixie"),
        ("images/debian-trixy", "", "images/debian-trixy"),
        ("./trixie", "", "trixie"),
        (None, "[run]\npids_limit = 0\n", "pids_limit"),
        (None, "[run]\ncpus = -1\n", "cpus"),
        (None, "[run]\nmemory = '0'\n", "memory"),
    ],
)
def test_config_mistakes_are_caught_before_any_container(
    docker_engine, tmp_path: Path, image: str | None, limits: str, expected: str
) -> None:
    root = project(tmp_path / "p", SAME, TWO, extra=limits)
    (root / "images" / "debian-trixie").mkdir(parents=True)
    if image is not None:  # the second environment names a folder that is not there
        text = (root / "reprocheck.toml").read_text()
        head, _, tail = text.rpartition(debian_image("bookworm"))
        (root / "reprocheck.toml").write_text(head + image + tail)
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert expected in proc.stderr
    assert not (root / "reports").exists()


# --------------------------------------------------------------------------- 9. pairs

EXTRA_OUTPUT = """
import os
def run(path):
    out = {"x": 1.0}
    if os.environ["EXTRA"] == "1":
        out["only_here"] = 2.0
    return out
"""


def test_pairs_report_only_what_one_side_made(docker_engine, debian_bases, tmp_path: Path) -> None:
    envs = {"a": {"EXTRA": "0"}, "b": {"EXTRA": "0"}, "c": {"EXTRA": "1"}}
    root = project(tmp_path / "p", EXTRA_OUTPUT, envs, extra="[compare]\nmode = 'all-pairs'\n")
    proc = reprocheck(root, "run")
    no_traceback(proc)
    pairs = {(c["output"], c["baseline"], c["candidate"]): c["verdict"]
             for c in report(root)["comparisons"]}  # fmt: skip
    assert pairs == {
        ("one.bin/x", "a", "b"): "identical", ("one.bin/x", "a", "c"): "identical",
        ("one.bin/x", "b", "c"): "identical", ("one.bin/only_here", "a", "c"): "new",
        ("one.bin/only_here", "b", "c"): "new",
    }  # fmt: skip
    assert proc.returncode == 0, proc.stdout  # a new output passes ([compare] new_outputs)
    run_id = (root / "reports" / "latest").resolve().name
    same = reprocheck(root, "diff", run_id, run_id)
    assert same.returncode == 0, same.stdout + same.stderr


# --------------------------------------------------------------------------- 10. isolation

SNOOP = """
import os
def run(path):
    seen = 0
    for folder in ("/project/reports", "/project/baselines"):
        if os.path.isdir(folder):
            for _dirpath, dirs, files in os.walk(folder):
                seen += len(dirs) + len(files)
    return {"seen": seen}
"""


def test_environments_cannot_see_runs_or_baselines(docker_engine, debian_bases,
                                                   tmp_path: Path) -> None:  # fmt: skip
    root = project(tmp_path / "p", SNOOP, {"a": {}, "b": {}})
    assert reprocheck(root, "run").returncode == 0
    assert reprocheck(root, "baseline", "save", "golden").returncode == 0
    proc = reprocheck(root, "run", "--json", "out.json")
    assert proc.returncode == 0, proc.stderr
    outputs = root / "reports" / "latest" / "environments" / "a" / "outputs"
    import numpy as np

    with np.load(outputs / "one.bin.npz") as arrays:
        assert int(arrays["seen"]) == 0


# --------------------------------------------------------------------------- 11. messages

CRASHES = """
import ctypes, os, sys
def run(path):
    how = os.environ["HOW"]
    if how == "exit":
        sys.exit(3)
    if how == "raise":
        raise ValueError("<script>alert(1)</script> bad pixel")
    if how == "dots":
        return {"..": 1.0, "fine": 2.0}
    return {"fine": 2.0}
"""

CRASH_COMMAND = """
import ctypes, os, sys
sys.stderr.write("about to fail: " + os.environ["HOW"] + "\\n")
sys.stderr.flush()
if os.environ["HOW"] == "abort":
    os.abort()
if os.environ["HOW"] == "segv":
    ctypes.string_at(0)
"""


def test_failures_say_what_happened(docker_engine, debian_bases, tmp_path: Path) -> None:
    envs = {"ok": {"HOW": "none"}, "exit": {"HOW": "exit"}, "raise": {"HOW": "raise"},
            "dots": {"HOW": "dots"}}  # fmt: skip
    root = project(tmp_path / "p", CRASHES, envs)
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2
    assert "sys.exit(3)" in proc.stdout
    assert "bad pixel" in proc.stdout
    latest = root / "reports" / "latest"
    assert "bad pixel" in (latest / "report.html").read_text()
    markdown = (latest / "report.md").read_text()
    assert "<script>" not in markdown
    found = verdicts(report(root))
    assert found[("one.bin/..", "dots")] == "error"


@pytest.mark.parametrize(("how", "signal_name"), [("abort", "SIGABRT"), ("segv", "SIGSEGV")])
def test_a_crashing_command_names_the_signal(docker_engine, debian_bases, tmp_path: Path,
                                             how: str, signal_name: str) -> None:  # fmt: skip
    root = project(tmp_path / "p", CRASH_COMMAND, {"a": {"HOW": "none"}, "b": {"HOW": how}},
                   command=True)  # fmt: skip
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2
    env = {e["name"]: e for e in report(root)["environments"]}["b"]
    assert signal_name in env["error"], env["error"]
    assert f"about to fail: {how}" in env["error"]
    assert signal_name in proc.stdout


def test_crashing_harness_process_names_the_signal(docker_engine, debian_bases,
                                                   tmp_path: Path) -> None:  # fmt: skip
    code = textwrap.dedent("""
        import ctypes, os
        def run(path):
            if os.environ["HOW"] == "segv":
                ctypes.string_at(0)
            return {"x": 1.0}
        """)
    root = project(tmp_path / "p", code, {"a": {"HOW": "none"}, "b": {"HOW": "segv"}})
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2
    env = {e["name"]: e for e in report(root)["environments"]}["b"]
    assert env["status"] == "crash"
    assert "SIGSEGV" in env["error"] and "p.py" in env["error"], env["error"]


# --------------------------------------------------------------------------- hostile meta and names

REWRITES_ITS_STATUS = """
import json, os
def run(path):
    if os.environ["SHIFT"] == "1":
        json.dump({"fixtures": [1, 2], "command": "x", "harness_error": 7},
                  open("/meta/status.json", "w"))
        os.remove("/meta/spec.json")
        json.dump({"mode": "callable", "fixtures": [{"a": 1}]}, open("/meta/spec.json", "w"))
        os._exit(0)
    return {"x": 1.0}
"""

HOSTILE_NAMES = """
import json, os, sys
import numpy as np
out = sys.argv[2]
np.save(os.path.join(out, "good.npy"), np.arange(3))
with open(os.path.join(out.encode(), b"bad\\xff\\xfe.npy"), "wb") as f:
    f.write(b"x")
json.dump({"big": 2**70, "ok": 1.0}, open(os.path.join(out, "m.json"), "w"))
os.mkdir(os.path.join(out, "d"))
np.save(os.path.join(out, "d", "k.npy"), np.ones(2) * int(os.environ["SHIFT"]))
np.savez(os.path.join(out, "d.npz"), k=np.ones(2))
"""


def test_a_pipeline_that_rewrites_its_status_loses_nothing(docker_engine, debian_bases,
                                                            tmp_path: Path) -> None:  # fmt: skip
    root = project(tmp_path / "p", REWRITES_ITS_STATUS, TWO)
    proc = reprocheck(root, "run")
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    data = report(root)
    statuses = {e["name"]: e["status"] for e in data["environments"]}
    assert statuses["a"] == "ok" and statuses["b"] in ("error", "partial", "crash")
    assert history_rows(root) >= 1


def test_hostile_output_names_keep_every_report(docker_engine, debian_bases,
                                                tmp_path: Path) -> None:  # fmt: skip
    root = project(tmp_path / "p", HOSTILE_NAMES, TWO, command=True)
    found = verdicts(run_with_errors(root))
    assert found[("good", "b")] == "identical"
    assert found[("m/ok", "b")] == "identical"
    for bad in ("m/big", "bad\\xff\\xfe", "d/k"):  # d/k: a .npy and an .npz member
        assert found[(bad, "b")] == "error", (bad, found)
    assert history_rows(root) == len(found)
    assert (root / "reports" / "latest" / "report.html").is_file()
