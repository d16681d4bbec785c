"""Imported at start-up by every Python process of a command pipeline: the harness puts this
folder first on the command's PYTHONPATH (and nowhere else: neither the harness nor a callable
pipeline sees it).

When the process ends normally (``atexit``), it writes what it mapped (``/proc/self/maps``) and
which numpy and cv2 it imported to ``$REPROCHECK_PROCESS_RECORDS/<pid>-<ns>.json``, so the
fingerprint's loaded libraries are the pipeline's own, not the harness's. A process that ends
without ``atexit`` (``os._exit``, a signal) is still seen by the harness sampling ``/proc``.

Then it runs the ``sitecustomize`` it hides, if any (Debian ships one), as Python would have.
Python >= 3.9, standard library only; it never raises from its own work.
"""

import os
import sys

RECORDS_ENV = "REPROCHECK_PROCESS_RECORDS"
MODULES = ("numpy", "cv2")
ARGS_KEPT = 16
ARG_CHARS = 200

_HERE = os.path.dirname(os.path.realpath(__file__))
_FOLDER = os.environ.get(RECORDS_ENV)


def _mapped_files():
    files = set()
    with open("/proc/self/maps") as handle:
        for line in handle:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            path = parts[5].strip()
            if path.endswith(" (deleted)"):
                path = path[: -len(" (deleted)")]
            if path.startswith("/"):
                files.add(path)
    return sorted(files)


def _start_time():
    with open("/proc/self/stat") as handle:
        return handle.read().rpartition(")")[2].split()[19]


def _executable():
    """The program's file, as /proc/<pid>/exe names it to the harness sampling it."""
    try:
        return os.readlink("/proc/self/exe")
    except OSError:
        return sys.executable


def _emulated():
    """Under the CPU model's emulator (``$REPROCHECK_QEMU``): whether this process still runs
    in it. qemu-user answers ``/proc/self/exe`` with the emulated program, but not a path it
    does not recognise as this process's own (``<pid>/exe`` under an open ``/proc``): that
    is the kernel's answer, the emulator's own binary. None when no emulator is set."""
    qemu = os.environ.get("REPROCHECK_QEMU")
    if not qemu:
        return None
    try:
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        try:
            found = os.readlink(f"{os.getpid()}/exe", dir_fd=proc)
            return found in (qemu, os.path.realpath(qemu))
        finally:
            os.close(proc)
    except OSError:
        return None


def _modules():
    found = {}
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None:
            version = getattr(module, "__version__", None)
            found[name] = {
                "version": None if version is None else str(version),
                "file": getattr(module, "__file__", None),
            }
    return found


def _dump():
    try:
        import json
        import time

        data = {
            "pid": os.getpid(),
            "start": _start_time(),
            "executable": _executable(),
            "emulated": _emulated(),
            "argv": [str(a)[:ARG_CHARS] for a in sys.argv[:ARGS_KEPT]],
            "python": sys.version.split()[0],
            "modules": _modules(),
            "files": _mapped_files(),
        }
        stem = os.path.join(_FOLDER, f"{os.getpid()}-{time.monotonic_ns()}")
        with open(stem + ".tmp", "w") as handle:
            json.dump(data, handle)
        os.replace(stem + ".tmp", stem + ".json")
    except Exception:  # a record that cannot be written must not change the pipeline's exit
        pass


def _chain():
    """Run the next ``sitecustomize`` on sys.path, the one this module hides."""
    import importlib.util
    from importlib.machinery import PathFinder

    path = [p for p in sys.path if os.path.realpath(p or os.curdir) != _HERE]
    spec = PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if _FOLDER:
    import atexit

    atexit.register(_dump)  # first registered, so it runs last: after the pipeline's own
_chain()
