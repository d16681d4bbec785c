"""The harness: runs INSIDE an environment's container, once per environment.

Reads ``<meta>/spec.json`` written by the host, runs the pipeline (a callable once per
fixture, or a command once), writes outputs under ``<outputs>``, a status file after every
fixture (so a crash or timeout keeps what finished) and the environment fingerprint.

A command runs in processes of its own, so the harness (see :func:`run_command`) gives them
``reprocheck_probe`` and a ``sitecustomize`` (``command_site/``) on PYTHONPATH, joins their
probe records into ``<meta>/probes/all.npz``, and fingerprints the libraries they mapped (from
their own records at exit and from sampling ``/proc`` while they run), not its own.

Constraints: Python >= 3.9, standard library and numpy only.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import importlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
import zipfile
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
EXIT_HARNESS_ERROR = 3
EXIT_DEADLINE = 124  # as coreutils' timeout
ERROR_TAIL_CHARS = 4000
JOURNAL_FILE = "status.jsonl"  # each fixture's state as it changes (see Status)
WATCHDOG_FILE = "watchdog.json"

# Command mode. The names are also spelled in reprocheck_probe.py and command_site/.
COMMAND_SITE = os.path.join(HERE, "command_site")  # sitecustomize for the command's Pythons
COMMAND_FIXTURE = "all"  # probes/all.npz: a command's records (reprocheck_probe.COMMAND_FIXTURE)
PROBE_RECORDS_ENV = "REPROCHECK_PROBE_RECORDS"
PROCESS_RECORDS_ENV = "REPROCHECK_PROCESS_RECORDS"
PROBE_RECORDS_DIR = ".probe-records"  # under <meta>; removed once joined into probes/all.npz
PROCESS_RECORDS_DIR = ".process-records"  # under <meta>; removed once read
RECORD_KEY = "record:"  # reprocheck_probe.RECORD_KEY
PLACEHOLDER_RE = re.compile(r"\{(inputs|outputs)\}")
# Sampling /proc while a command runs: often at first (short processes), then less often.
SAMPLE_FIRST, SAMPLE_GROWTH, SAMPLE_LONGEST = 0.005, 1.5, 0.25
ARGS_KEPT, ARG_CHARS = 16, 200
LEFT_LISTED = 16  # processes listed in status.json's left_emulator
# Another CPU model (``cpu`` of an environment): the host mounts a static qemu-user binary and
# names the model; the harness runs itself, and a command's ELF programs, under it.
QEMU_ENV, CPU_ENV, EMULATED_ENV = "REPROCHECK_QEMU", "REPROCHECK_CPU", "REPROCHECK_EMULATED"
# engine/transfer.py spells these too: where to hash the writable folders, and which ones.
TRANSFER_MANIFEST_ENV, TRANSFER_ROOTS_ENV = (
    "REPROCHECK_TRANSFER_MANIFEST",
    "REPROCHECK_TRANSFER_ROOTS",
)


def _tail(text: str) -> str:
    return text[-ERROR_TAIL_CHARS:]


class Status:
    """status.json, rewritten atomically at the start, the end and each step of the run as a
    whole; each fixture's state (running, then its result) is appended to status.jsonl as it
    changes, so a crash still tells which fixtures finished and which one was running
    (rewriting the whole status.json per fixture made a run of many fixtures quadratic)."""

    def __init__(self, meta: str) -> None:
        self.path = os.path.join(meta, "status.json")
        self.journal_path = os.path.join(meta, JOURNAL_FILE)
        self.data: Dict[str, Any] = {
            "started": time.time(),
            "finished": None,
            "harness_error": None,
            "fixtures": {},
            "command": None,
        }
        self.save()

    def fixture(self, name: str, entry: Dict[str, Any]) -> None:
        self.data["fixtures"][name] = entry
        with open(self.journal_path, "a") as handle:  # closed: a crash after this keeps it
            handle.write(json.dumps({"fixture": name, "entry": entry}, sort_keys=True) + "\n")

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
    watch = EmulatorWatch() if os.environ.get(EMULATED_ENV) else None
    with watch or contextlib.nullcontext():
        for fixture in spec["fixtures"]:
            status.fixture(fixture, {"status": "running"})
            status.fixture(fixture, run_fixture(func, spec, fixture))
    if watch is not None:
        status.data["left_emulator"] = left_emulator(watch.processes())
        status.save()


def substitute(part: str, values: Mapping[str, str]) -> str:
    """``{inputs}`` and ``{outputs}`` replaced in one pass; every other brace, and whatever the
    values themselves hold, stays as it is (a dict literal in ``python3 -c`` code)."""
    return PLACEHOLDER_RE.sub(lambda match: values[match.group(1)], part)


def command_argv(command: List[str], inputs: str, outputs: str) -> List[str]:
    values = {"inputs": inputs, "outputs": outputs}
    return [substitute(part, values) for part in command]


def command_environment(
    base: Mapping[str, str], probe_records: str, process_records: str
) -> Dict[str, str]:
    """The command's environment: ``command_site`` first on PYTHONPATH (its sitecustomize
    records each Python process at exit), the harness folder last (``import reprocheck_probe``
    even when the environment set a PYTHONPATH of its own; a project module of the same name
    as a harness file still wins), and where records go."""
    paths = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [p for p in paths if os.path.realpath(p) not in (HERE, COMMAND_SITE)]
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join([COMMAND_SITE, *paths, HERE])
    env[PROBE_RECORDS_ENV] = probe_records
    env[PROCESS_RECORDS_ENV] = process_records
    return env


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _stat_fields(pid: int) -> List[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ..., starttime at 19, ...]."""
    return _read(f"/proc/{pid}/stat").rpartition(")")[2].split()


def _descendants(root: int) -> Iterator[Tuple[int, str]]:
    """(pid, start time) of ``root`` and every process below it."""
    children: Dict[int, List[int]] = {}
    starts: Dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(int(name))
            children.setdefault(int(fields[1]), []).append(int(name))
            starts[int(name)] = fields[19]
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in starts:
            yield pid, starts[pid]
        stack.extend(children.get(pid, ()))


def _argv(pid: int) -> List[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        raw = handle.read().split(b"\0")
    args = [a.decode("utf-8", "replace")[:ARG_CHARS] for a in raw[:-1]]
    return args[:ARGS_KEPT]


def _emulator() -> Optional[Tuple[str, ...]]:
    """The CPU model's emulator binary as /proc/<pid>/exe names it, when one is set."""
    qemu = os.environ.get(QEMU_ENV)
    return (qemu, os.path.realpath(qemu)) if qemu else None


class ProcessSampler:
    """The processes of a command and what each mapped, read from /proc while it runs.

    A process that ends between two samples is missed here (a Python one still leaves its own
    record at exit); a library mapped and unmapped between two samples too. Under a CPU
    model's emulator each process also gets ``emulated``: whether its program, as the kernel
    sees it (another process's /proc entry is not the emulator's to answer), is the
    emulator; a program a process exec'd runs on the host CPU, outside it. ``maps=False``
    reads only each process's program and arguments; ``with_root=False`` leaves ``root``
    itself out (the harness watching its own children)."""

    def __init__(self, root: int, *, maps: bool = True, with_root: bool = True) -> None:
        self.root = root
        self.maps = maps
        self.with_root = with_root
        self.seen: Dict[Tuple[int, str], Dict[str, Any]] = {}
        self.emulator = _emulator()

    def sample(self) -> None:
        for pid, start in _descendants(self.root):
            if pid == self.root and not self.with_root:
                continue
            try:
                executable = os.readlink(f"/proc/{pid}/exe")
                text = _read(f"/proc/{pid}/maps") if self.maps else ""
                argv = _argv(pid)
                if os.readlink(f"/proc/{pid}/exe") != executable:
                    continue  # it exec'd while read: the next sample sees the new program
            except OSError:  # gone, or not ours to read
                continue
            entry = self.seen.setdefault(
                (pid, start), {"pid": pid, "start": start, "seen": ["sampled"], "files": set()}
            )
            if entry.get("executable", executable) != executable:
                entry["files"] = set()  # an exec: what the process mapped before is not its own
            entry["files"].update(_mapped_files(text))
            entry["executable"], entry["argv"] = executable, argv  # after an exec: the new one
            entry["cmdline"] = argv  # as /proc shows it (a record's argv is sys.argv)
            if self.emulator is not None:  # once outside the emulator, never back in it
                inside = executable in self.emulator
                entry["emulated"] = inside and entry.get("emulated", True)

    def follow(self, proc: subprocess.Popen[str]) -> int:
        """Sample until ``proc`` ends; its exit code."""
        interval = SAMPLE_FIRST
        while True:
            with contextlib.suppress(OSError):
                self.sample()
            try:
                return proc.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                interval = min(interval * SAMPLE_GROWTH, SAMPLE_LONGEST)


def _mapped_files(text: str) -> List[str]:
    files = set()
    for line in text.splitlines():
        parts = line.split(None, 5)
        path = parts[5].strip() if len(parts) == 6 else ""
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if path.startswith("/"):
            files.add(path)
    return sorted(files)


def pipeline_processes(sampled: Dict[Tuple[int, str], Dict[str, Any]], records: str) -> List[Any]:
    """The command's processes: what sampling saw, joined with the records its Python processes
    wrote at exit (``command_site/sitecustomize.py``); ``records`` is removed."""
    found = {key: dict(entry, files=set(entry["files"])) for key, entry in sampled.items()}
    for name in sorted(os.listdir(records)) if os.path.isdir(records) else ():
        path = os.path.join(records, name)
        try:
            if not name.endswith(".json") or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            data = json.loads(_read(path))
            key = (int(data["pid"]), str(data["start"]))
            files = [str(f) for f in data.get("files") or ()]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a record that is not one: the sampled part still counts
        entry = found.setdefault(key, {"pid": key[0], "start": key[1], "seen": [], "files": set()})
        entry["seen"] = sorted({*entry["seen"], "exit"})
        entry["files"].update(files)
        for field in ("executable", "argv", "python", "modules"):
            entry[field] = data.get(field, entry.get(field))
        if isinstance(data.get("emulated"), bool):  # its own answer, at exit
            entry["emulated"] = data["emulated"] and entry.get("emulated", True)
    shutil.rmtree(records, ignore_errors=True)
    return [dict(entry, files=sorted(entry["files"])) for entry in found.values()]


def left_emulator(processes: List[Any]) -> Dict[str, Any]:
    """The processes that left the CPU model's emulator and loaded code that computes
    (status.json's ``left_emulator``): how many, and the first few. A program a process
    exec'd runs outside the emulator: on the host CPU, or for another architecture under the
    system's binfmt emulator at its default CPU. Such a program counts when it mapped a shared
    library besides the dynamic loader and libc (libm, libpython, BLAS, ...); a static tool
    or a shell that used libc alone (``ldconfig -p`` run by ``ctypes.util.find_library``,
    ``sleep``) computed nothing an output holds. Every process stays listed, with
    ``emulated``, in the fingerprint's ``pipeline_processes``."""
    found = [p for p in processes if p.get("emulated") is False and _computes(p)]
    found.sort(key=lambda p: (int(p.get("start") or 0), int(p.get("pid") or 0)))
    listed = [
        {
            "pid": p.get("pid"),
            "executable": p.get("executable"),
            "argv": p.get("cmdline") or p.get("argv") or [],
        }
        for p in found[:LEFT_LISTED]
    ]
    return {"count": len(found), "listed": listed}


_SYSTEM_ONLY = re.compile(r"(ld-linux.*|ld-musl.*|libc\.so(\..*)?|libc-[0-9.]+\.so)")


def _computes(process: Dict[str, Any]) -> bool:
    """Whether the process mapped a shared library besides the dynamic loader and libc."""
    for path in process.get("files") or ():
        name = os.path.basename(str(path))
        if ".so" in name and not _SYSTEM_ONLY.fullmatch(name):
            return True
    return False


class EmulatorWatch:
    """While a callable pipeline runs under a CPU model's emulator: the processes it starts
    (a subprocess, multiprocessing with spawn or forkserver) sampled from /proc in a thread;
    one that exec'd a program left the emulator. A process that ends between two samples
    (every 5 ms at first, at most every 0.25 s) is missed. What each maps is read too: a
    program that loaded no library but libc computed nothing (:func:`left_emulator`)."""

    def __init__(self) -> None:
        self.sampler = ProcessSampler(os.getpid(), with_root=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        interval = SAMPLE_FIRST
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):
                self.sampler.sample()
            interval = min(interval * SAMPLE_GROWTH, SAMPLE_LONGEST)

    def __enter__(self) -> EmulatorWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def processes(self) -> List[Any]:
        return list(self.sampler.seen.values())


def join_probe_records(records: str, probes: str) -> Optional[str]:
    """A command's probe records (one small ``.npz`` each, see reprocheck_probe) joined in the
    order they were made into ``probes/all.npz`` with the keys a callable's probes have
    (``000:stage``, a repeated stage as ``stage#2``); ``records`` is removed. Arrays are copied
    as they are, never loaded."""
    names = sorted(os.listdir(records)) if os.path.isdir(records) else []
    names = [n for n in names if n.endswith(".npz")]
    target = None
    if names:
        os.makedirs(probes, exist_ok=True)
        target = os.path.join(probes, COMMAND_FIXTURE + ".npz")
        taken: Dict[str, None] = {}
        with zipfile.ZipFile(target + ".tmp", "w", zipfile.ZIP_STORED, allowZip64=True) as out:
            for name in names:
                _copy_records(os.path.join(records, name), out, taken)
        os.replace(target + ".tmp", target)
    shutil.rmtree(records, ignore_errors=True)
    return target


def _copy_records(path: str, out: zipfile.ZipFile, taken: Dict[str, None]) -> None:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return
        with zipfile.ZipFile(path) as part:
            for info in part.infolist():
                member = info.filename
                if not (member.startswith(RECORD_KEY) and member.endswith(".npy")):
                    continue
                stage = unique_name(member[len(RECORD_KEY) : -len(".npy")], taken)
                taken[stage] = None
                key = f"{len(taken) - 1:03d}:{stage}.npy"
                with part.open(info) as src, out.open(key, "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return  # not a record (the pipeline can write there too): skipped


def unique_name(name: str, taken: Mapping[str, Any]) -> str:
    """As reprocheck_probe.unique_name: ``name``, else ``name#2``, ``name#3``..."""
    if name not in taken:
        return name
    suffix = 2
    while f"{name}#{suffix}" in taken:
        suffix += 1
    return f"{name}#{suffix}"


def _drain(stream: Any, chunks: List[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: chunks.append(stream.read()), daemon=True)
    thread.start()
    return thread


def run_command(spec: Dict[str, Any], status: Status) -> List[Any]:
    """Run the command once; its processes (for the fingerprint)."""
    argv = command_argv(spec["command"], spec["fixtures_dir"], spec["outputs"])
    argv = emulated_argv(argv, os.environ)
    probe_records = os.path.join(spec["meta"], PROBE_RECORDS_DIR)
    process_records = os.path.join(spec["meta"], PROCESS_RECORDS_DIR)
    for folder in (probe_records, process_records):
        os.makedirs(folder, exist_ok=True)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=spec["project"],
            env=command_environment(os.environ, probe_records, process_records),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except BaseException:  # no such program: nothing to join or read
        for folder in (probe_records, process_records):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    chunks: List[str] = []
    reader = _drain(proc.stdout, chunks)
    sampler = ProcessSampler(proc.pid)
    returncode = sampler.follow(proc)
    reader.join()
    output = "".join(chunks)
    sys.stdout.write(output)
    entry = {
        "status": "ok" if returncode == 0 else "error",
        "exit_code": returncode,
        "seconds": round(time.monotonic() - started, 4),
    }
    if returncode < 0:
        entry["signal"] = _signal_name(-returncode)
    if returncode != 0:
        entry["error"] = _tail(output)
    status.data["command"] = entry
    status.save()
    try:
        join_probe_records(probe_records, os.path.join(spec["meta"], "probes"))
    except Exception as exc:  # probes serve explain; the outputs stand without them
        sys.stderr.write(f"reprocheck: the probes were not joined: {type(exc).__name__}: {exc}\n")
    processes = pipeline_processes(sampler.seen, process_records)
    if sampler.emulator is not None:
        status.data["left_emulator"] = left_emulator(processes)
        status.save()
    return processes


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def write_fingerprint(meta: str, processes: Optional[List[Any]] = None) -> None:
    try:
        # By path, under a name of its own: a project file named fingerprint.py (the
        # pipeline's folder comes first on sys.path) must not replace it.
        module_spec = importlib.util.spec_from_file_location(
            "_reprocheck_fingerprint", os.path.join(HERE, "fingerprint.py")
        )
        assert module_spec is not None and module_spec.loader is not None
        fingerprint = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(fingerprint)
        data = fingerprint.collect(processes=processes)
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
    processes = None  # a command's processes, when it ran
    try:
        if spec["mode"] == "callable":
            run_callable(spec, status)
        else:
            processes = run_command(spec, status)
    except Exception:
        code = _harness_error(status, _tail(traceback.format_exc()))
    except SystemExit as exc:  # while the pipeline's module was imported
        code = _harness_error(status, f"the pipeline called sys.exit({exc.code!r})")
    if spec["mode"] == "command" and processes is None:
        processes = []  # it never ran: nothing was loaded by it (not the harness's own)
    write_fingerprint(meta, processes)
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


def emulated_argv(argv: List[str], environ: Mapping[str, str]) -> List[str]:
    """``argv`` under the CPU model's emulator when one is set: an ELF program directly, a
    script through its ``#!`` interpreter (``#!/usr/bin/env NAME`` found on PATH), so the
    interpreter is emulated too. Whatever these exec later runs on the host CPU; the harness
    reports such processes (``left_emulator``)."""
    qemu, model = environ.get(QEMU_ENV), environ.get(CPU_ENV)
    if not qemu or not model or not argv:
        return list(argv)
    path = environ.get("PATH")
    program = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=path)
    try:
        with open(program or argv[0], "rb") as handle:
            head = handle.read(256)
    except OSError:
        return list(argv)
    script = os.path.abspath(program or argv[0])
    if head.startswith(b"\x7fELF"):
        return [qemu, "-cpu", model, script, *argv[1:]]
    interpreter = _shebang(head, path)
    if interpreter is None:
        return list(argv)
    return [qemu, "-cpu", model, *interpreter, script, *argv[1:]]


def _shebang(head: bytes, path: Optional[str]) -> Optional[List[str]]:
    """A script's interpreter and its argument (``#!/usr/bin/env NAME`` resolved on PATH), when
    it is an ELF program; None otherwise."""
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split(None, 1)
    if not words:
        return None
    interpreter, rest = words[0], words[1:]
    if os.path.basename(interpreter) == "env" and rest and not rest[0].startswith("-"):
        name, *more = rest[0].split(None, 1)
        found = shutil.which(name, path=path)
        if found is None:
            return None
        interpreter, rest = found, more
    try:
        with open(interpreter, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                return None  # a script interpreting a script: left as it is
    except OSError:
        return None
    return [interpreter, *rest]


def _exec_emulated(meta: str) -> None:
    """Replace this process by the harness itself under the CPU model's emulator."""
    os.environ[EMULATED_ENV] = "1"
    argv = emulated_argv([sys.executable, os.path.abspath(__file__), meta], os.environ)
    os.execv(argv[0], argv)


def _child(meta: str, spec: Dict[str, Any]) -> None:
    os.setpgid(0, 0)
    code = EXIT_HARNESS_ERROR
    try:
        if os.environ.get(QEMU_ENV) and not os.environ.get(EMULATED_ENV):
            _exec_emulated(meta)  # the watchdog (this process's parent) stays native
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
            _keep_command_records(meta)
            sys.stderr.write(f"reprocheck: the pipeline ran past its deadline of {seconds:g}s\n")
            return EXIT_DEADLINE
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        _write_watchdog(meta, {"signal": number, "name": _signal_name(number)})
        return 128 + number
    return os.WEXITSTATUS(status)


def _keep_command_records(meta: str) -> None:
    """After the deadline killed the harness: what a command recorded until then."""
    with contextlib.suppress(Exception):
        join_probe_records(os.path.join(meta, PROBE_RECORDS_DIR), os.path.join(meta, "probes"))
    shutil.rmtree(os.path.join(meta, PROCESS_RECORDS_DIR), ignore_errors=True)


def write_transfer_manifest() -> None:
    """On an engine on another machine: the sha256 of every regular file left in the
    writable folders (but those it cannot read), which the host checks its copies against
    (engine/transfer.py)."""
    target = os.environ.get(TRANSFER_MANIFEST_ENV)
    if not target:
        return
    files: Dict[str, str] = {}
    for root in os.environ.get(TRANSFER_ROOTS_ENV, "").split(":"):
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if path == target or os.path.islink(path) or not os.path.isfile(path):
                    continue
                digest = hashlib.sha256()
                try:
                    with open(path, "rb") as handle:
                        for chunk in iter(lambda: handle.read(1 << 20), b""):
                            digest.update(chunk)
                except OSError:  # made unreadable (chmod 000): the others are still checked
                    continue
                files[path] = digest.hexdigest()
    with open(target + ".tmp", "w") as handle:
        json.dump({"files": files}, handle)
    os.replace(target + ".tmp", target)


def main(meta: str) -> int:
    os.umask(0o022)
    with open(os.path.join(meta, "spec.json")) as handle:
        spec = json.load(handle)
    deadline = spec.get("deadline")
    if os.environ.get(EMULATED_ENV):  # the watchdog's child, exec'd under the emulator
        return work(meta, spec)
    if deadline:
        code = watch(meta, spec, float(deadline))
        with contextlib.suppress(Exception):  # a missing manifest only skips the check
            write_transfer_manifest()
        return code
    if os.environ.get(QEMU_ENV):
        _exec_emulated(meta)
    return work(meta, spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/meta"))
