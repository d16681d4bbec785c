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
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any, Dict, Optional

# The probes "fixture" of a command pipeline, which has no per-fixture calls
# (reprocheck/explain/stages.py reads <meta>/probes/all.npz for every output of a command).
COMMAND_FIXTURE = "all"
# The folder a command's records go to (set by the harness for the command's processes only).
RECORDS_ENV = "REPROCHECK_PROBE_RECORDS"
# A record file holds one array under this prefix plus the stage name (a bare stage name
# could clash with np.savez's own parameters, such as "file").
RECORD_KEY = "record:"

_current: Optional[str] = None
_values: Dict[str, Any] = OrderedDict()
_written = 0  # records this process wrote in command mode


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
    import numpy as np

    _values[unique_name(str(name), _values)] = np.array(value, copy=True)


def _write_record(folder: str, name: str, value: Any) -> None:
    """One record of a command as ``<monotonic ns>-<pid>-<n>.npz``: sorted by name, the
    records of every process of the command are in the order they were made."""
    import numpy as np

    global _written
    _written += 1
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{time.monotonic_ns():020d}-{os.getpid():010d}-{_written:06d}")
    with open(stem + ".tmp", "wb") as handle:
        np.savez(handle, **{RECORD_KEY + name: np.array(value, copy=True)})
    os.replace(stem + ".tmp", stem + ".npz")


def begin(fixture: str) -> None:
    """Start recording for ``fixture`` (called by the harness)."""
    global _current
    _current = fixture
    _values.clear()


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
    _values.clear()
    return path
