"""Record intermediate values of a pipeline: ``reprocheck_probe.record("after_resize", img)``.

Importable inside reprocheck containers without installing reprocheck (the harness folder
is on PYTHONPATH). Outside a reprocheck run, ``record`` does nothing, so pipelines can
call it unconditionally. Runs on Python 3.9 with only the standard library and numpy.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Dict, Optional

_current: Optional[str] = None
_values: Dict[str, Any] = OrderedDict()


def record(name: str, value: Any) -> None:
    """Keep a copy of ``value`` under ``name`` for the fixture being processed."""
    if _current is None:
        return
    import numpy as np

    key = str(name)
    if key in _values:
        suffix = 2
        while f"{key}#{suffix}" in _values:
            suffix += 1
        key = f"{key}#{suffix}"
    _values[key] = np.array(value, copy=True)


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
