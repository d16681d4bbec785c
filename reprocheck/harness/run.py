"""The harness: runs INSIDE an environment's container, once per environment.

Reads ``<meta>/spec.json`` written by the host, runs the pipeline (a callable once per
fixture, or a command once), writes outputs under ``<outputs>``, a status file after every
fixture (so a crash or timeout keeps what finished) and the environment fingerprint.

Constraints: Python >= 3.9, standard library and numpy only.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
EXIT_HARNESS_ERROR = 3
EXIT_DEADLINE = 124  # as coreutils' timeout
ERROR_TAIL_CHARS = 4000
WATCHDOG_FILE = "watchdog.json"


def _tail(text: str) -> str:
    return text[-ERROR_TAIL_CHARS:]


class Status:
    """status.json, rewritten atomically after every step."""

    def __init__(self, meta: str) -> None:
        self.path = os.path.join(meta, "status.json")
        self.data: Dict[str, Any] = {
            "started": time.time(),
            "finished": None,
            "harness_error": None,
            "fixtures": {},
            "command": None,
        }
        self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(self.data, handle, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


def load_callable(project: str, target: str) -> Callable[[str], Any]:
    """``path/to/file.py:func`` (relative to the project) or ``package.module:func``."""
    module_part, _, attr = target.rpartition(":")
    if module_part.endswith(".py") or "/" in module_part:
        path = os.path.join(project, module_part)
        if not os.path.isfile(path):
            raise RuntimeError(f"pipeline file {module_part} does not exist in the project")
        sys.path.insert(0, os.path.dirname(path))
        name = "reprocheck_pipeline_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, project)
        module = importlib.import_module(module_part)
    func = getattr(module, attr, None)
    if not callable(func):
        raise RuntimeError(f"{module_part} has no callable {attr!r}")
    return func  # type: ignore[no-any-return]


def flatten(result: Any, prefix: str = "") -> Dict[str, Any]:
    """A dict of name -> array-like; nested dicts become slash-separated names."""
    import numpy as np

    if not isinstance(result, dict):
        raise TypeError("the pipeline must return a dict of name -> array or number")
    flat: Dict[str, Any] = {}
    for key, value in result.items():
        name = prefix + str(key)
        if isinstance(value, dict):
            nested = flatten(value, name + "/")
        else:
            array = np.asarray(value)
            if array.dtype == object or array.dtype.kind in "USV":
                raise TypeError(f"output {name!r} is not numeric (dtype {array.dtype})")
            nested = {name: array}
        for inner in nested:
            if inner in flat:  # {"a/b": 1, "a": {"b": 2}}: one would hide the other
                raise TypeError(f"two outputs are named {inner!r}")
        flat.update(nested)
    return flat


def save_outputs(outputs: str, fixture: str, arrays: Dict[str, Any]) -> None:
    import numpy as np

    path = os.path.join(outputs, fixture + ".npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **arrays)


def run_fixture(func: Callable[[str], Any], spec: Dict[str, Any], fixture: str) -> Dict[str, Any]:
    import numpy as np
    import reprocheck_probe

    random.seed(0)
    np.random.seed(0)
    started = time.monotonic()
    reprocheck_probe.begin(fixture)
    try:
        arrays = flatten(func(os.path.join(spec["fixtures_dir"], fixture)))
        save_outputs(spec["outputs"], fixture, arrays)
        entry = {"status": "ok", "outputs": sorted(arrays)}
    except Exception:  # a fixture that raises is that fixture's status, not the run's end
        entry = {"status": "error", "error": _tail(traceback.format_exc())}
    except SystemExit as exc:  # sys.exit() in the pipeline ends this fixture, not the run
        entry = {"status": "error", "error": f"the pipeline called sys.exit({exc.code!r})"}
    finally:
        reprocheck_probe.end(os.path.join(spec["meta"], "probes"))
    entry["seconds"] = round(time.monotonic() - started, 4)
    return entry


def run_callable(spec: Dict[str, Any], status: Status) -> None:
    func = load_callable(spec["project"], spec["callable"])
    for fixture in spec["fixtures"]:
        status.data["fixtures"][fixture] = {"status": "running"}
        status.save()
        status.data["fixtures"][fixture] = run_fixture(func, spec, fixture)
        status.save()


def run_command(spec: Dict[str, Any], status: Status) -> None:
    mapping = {"inputs": spec["fixtures_dir"], "outputs": spec["outputs"]}
    # Only the two placeholders: any other brace (a dict in "python3 -c ...") stays as it is.
    argv: List[str] = [
        part.replace("{inputs}", mapping["inputs"]).replace("{outputs}", mapping["outputs"])
        for part in spec["command"]
    ]
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=spec["project"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    sys.stdout.write(proc.stdout)
    entry = {
        "status": "ok" if proc.returncode == 0 else "error",
        "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - started, 4),
    }
    if proc.returncode < 0:
        entry["signal"] = _signal_name(-proc.returncode)
    if proc.returncode != 0:
        entry["error"] = _tail(proc.stdout)
    status.data["command"] = entry
    status.save()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def write_fingerprint(meta: str) -> None:
    try:
        # By path, under a name of its own: a project file named fingerprint.py (the
        # pipeline's folder comes first on sys.path) must not replace it.
        module_spec = importlib.util.spec_from_file_location(
            "_reprocheck_fingerprint", os.path.join(HERE, "fingerprint.py")
        )
        assert module_spec is not None and module_spec.loader is not None
        fingerprint = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(fingerprint)
        data = fingerprint.collect()
    except Exception:
        data = {"error": _tail(traceback.format_exc())}
    tmp = os.path.join(meta, "fingerprint.json.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(meta, "fingerprint.json"))


def work(meta: str, spec: Dict[str, Any]) -> int:
    """Run the pipeline and write status, outputs and fingerprint; the exit code."""
    faulthandler.enable()  # a segfault or abort leaves a Python traceback on stderr
    sys.path.insert(0, HERE)
    status = Status(meta)
    code = 0
    try:
        if spec["mode"] == "callable":
            run_callable(spec, status)
        else:
            run_command(spec, status)
    except Exception:
        code = _harness_error(status, _tail(traceback.format_exc()))
    except SystemExit as exc:  # while the pipeline's module was imported
        code = _harness_error(status, f"the pipeline called sys.exit({exc.code!r})")
    write_fingerprint(meta)
    status.data["finished"] = time.time()
    status.save()
    return code


def _harness_error(status: Status, text: str) -> int:
    status.data["harness_error"] = text
    sys.stderr.write(text + "\n")
    return EXIT_HARNESS_ERROR


def _write_watchdog(meta: str, data: Dict[str, Any]) -> None:
    with open(os.path.join(meta, WATCHDOG_FILE), "w") as handle:
        json.dump(data, handle)


def _child(meta: str, spec: Dict[str, Any]) -> None:
    os.setpgid(0, 0)
    code = EXIT_HARNESS_ERROR
    try:
        code = work(meta, spec)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def watch(meta: str, spec: Dict[str, Any], seconds: float) -> int:
    """Run the harness in a child process and kill it at the deadline. As the container's
    first process, this makes the container end by itself even when nobody on the host waits
    for it any more (reprocheck killed with -9). Names the signal a child died of."""
    pid = os.fork()
    if pid == 0:
        _child(meta, spec)
    end = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= end:
            for target in (-pid, pid):
                with contextlib.suppress(OSError):
                    os.kill(target, signal.SIGKILL)
            os.waitpid(pid, 0)
            _write_watchdog(meta, {"deadline": seconds})
            sys.stderr.write(f"reprocheck: the pipeline ran past its deadline of {seconds:g}s\n")
            return EXIT_DEADLINE
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        _write_watchdog(meta, {"signal": number, "name": _signal_name(number)})
        return 128 + number
    return os.WEXITSTATUS(status)


def main(meta: str) -> int:
    os.umask(0o022)
    with open(os.path.join(meta, "spec.json")) as handle:
        spec = json.load(handle)
    deadline = spec.get("deadline")
    if deadline:
        return watch(meta, spec, float(deadline))
    return work(meta, spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/meta"))
