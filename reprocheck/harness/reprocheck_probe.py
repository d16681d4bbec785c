"""Record intermediate values of a pipeline: ``reprocheck_probe.record("after_resize", img)``.

Importable inside reprocheck containers without installing reprocheck (the harness folder
is on PYTHONPATH, for a callable and for every process of a command). Outside a reprocheck
run, ``record`` does nothing, so pipelines can call it unconditionally. Runs on Python 3.9
with only the standard library and numpy.

Where records go:

* callable mode: the harness calls :func:`begin` and :func:`end` around every fixture, and
  the fixture's records land in ``<meta>/probes/<fixture>.npz``;
* command mode: the harness sets ``REPROCHECK_PROBE_RECORDS`` for the command, and each record
  is written at once, by whichever process of the command makes it, as a small ``.npz`` in that
  folder (a command that crashes later keeps it). When the command ends the harness joins them,
  in the order they were recorded, into ``<meta>/probes/all.npz`` (``COMMAND_FIXTURE``).

In both, the keys are ``<order>:<stage>``; a stage recorded again is ``<stage>#2``, ``#3``...

Each record also notes the shared libraries the process mapped since its previous record (from
``/proc/self/maps``, read before anything else): what that stage loaded. A callable's fixture
starts from what was mapped when it began (the pipeline's imports are not any stage's); a
command's process from nothing. They are kept beside the arrays, where readers of the probes
do not look: ``<fixture>.libraries.json`` (``{"stages": {stage: [paths]}}``) for a callable,
``probes/libraries/<record>.json`` (``{"stage": name, "libraries": [paths]}``) for a command.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Set

# The probes "fixture" of a command pipeline, which has no per-fixture calls
# (reprocheck/explain/stages.py reads <meta>/probes/all.npz for every output of a command).
COMMAND_FIXTURE = "all"
# The folder a command's records go to (set by the harness for the command's processes only).
RECORDS_ENV = "REPROCHECK_PROBE_RECORDS"
# A record file holds one array under this prefix plus the stage name (a bare stage name
# could clash with np.savez's own parameters, such as "file").
RECORD_KEY = "record:"
# Where the libraries each stage loaded go (reprocheck/explain/stages.py reads them).
LIBRARIES_SUFFIX = ".libraries.json"  # a callable's: <meta>/probes/<fixture>.libraries.json
LIBRARIES_DIR = "libraries"  # a command's: <meta>/probes/libraries/<record>.json
# A shared object's file name: libfoo.so, libfoo.so.1.2, _mod.cpython-311-x86_64-linux-gnu.so
SHARED_OBJECT_RE = re.compile(r"\.so(\.\d+)*$")

_current: Optional[str] = None
_values: Dict[str, Any] = OrderedDict()
_written = 0  # records this process wrote in command mode
_mapped: Set[str] = set()  # shared libraries mapped at the previous record (or at begin)
_loaded: Dict[str, List[str]] = OrderedDict()  # a fixture's stage -> libraries it loaded


def mapped_libraries() -> Set[str]:
    """The shared libraries this process maps now (empty where /proc cannot be read)."""
    found = set()
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                parts = line.split(None, 5)
                path = parts[5].strip() if len(parts) == 6 else ""
                path = path[: -len(" (deleted)")] if path.endswith(" (deleted)") else path
                if path.startswith("/") and SHARED_OBJECT_RE.search(path):
                    found.add(path)
    except OSError:
        pass
    return found


def _newly_loaded() -> List[str]:
    """The libraries mapped since the previous record (or the fixture's start)."""
    now = mapped_libraries()
    new = sorted(now - _mapped)
    _mapped.update(now)
    return new


def unique_name(name: str, taken: Any) -> str:
    """``name``, or ``name#2``, ``name#3``... when it is in ``taken`` already."""
    if name not in taken:
        return name
    suffix = 2
    while f"{name}#{suffix}" in taken:
        suffix += 1
    return f"{name}#{suffix}"


def record(name: str, value: Any) -> None:
    """Keep a copy of ``value`` under ``name`` for the fixture being processed (a callable),
    or for the whole run (a command)."""
    if _current is None:
        folder = os.environ.get(RECORDS_ENV)
        if folder:
            _write_record(folder, str(name), value)
        return
    loaded = _newly_loaded()  # before numpy's import below can add to it
    import numpy as np

    stage = unique_name(str(name), _values)
    _values[stage] = np.array(value, copy=True)
    _loaded[stage] = loaded


def _write_record(folder: str, name: str, value: Any) -> None:
    """One record of a command as ``<monotonic ns>-<pid>-<n>.npz``: sorted by name, the
    records of every process of the command are in the order they were made."""
    loaded = _newly_loaded()
    import numpy as np

    global _written
    _written += 1
    os.makedirs(folder, exist_ok=True)
    name_part = f"{time.monotonic_ns():020d}-{os.getpid():010d}-{_written:06d}"
    stem = os.path.join(folder, name_part)
    with open(stem + ".tmp", "wb") as handle:
        np.savez(handle, **{RECORD_KEY + name: np.array(value, copy=True)})
    os.replace(stem + ".tmp", stem + ".npz")
    libraries = os.path.join(os.path.dirname(os.path.abspath(folder)), "probes", LIBRARIES_DIR)
    _write_json(os.path.join(libraries, name_part + ".json"), {"stage": name, "libraries": loaded})


def _write_json(path: str, data: Any) -> None:
    """``data`` as JSON at ``path``, written aside and renamed; the libraries serve explain
    only, so failing to write them never fails the record."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as handle:
            json.dump(data, handle)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def begin(fixture: str) -> None:
    """Start recording for ``fixture`` (called by the harness)."""
    global _current
    _current = fixture
    _values.clear()
    _loaded.clear()
    _mapped.clear()
    _mapped.update(mapped_libraries())


def end(directory: str) -> Optional[str]:
    """Write what was recorded to ``directory/<fixture>.npz`` in recording order."""
    global _current
    fixture, _current = _current, None
    if fixture is None or not _values:
        return None
    import numpy as np

    path = os.path.join(directory, fixture + ".npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ordered = OrderedDict((f"{i:03d}:{k}", v) for i, (k, v) in enumerate(_values.items()))
    np.savez(path, **ordered)
    _write_json(os.path.join(directory, fixture + LIBRARIES_SUFFIX), {"stages": dict(_loaded)})
    _values.clear()
    _loaded.clear()
    return path
