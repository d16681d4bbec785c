"""The docker SDK as reprocheck imports it: paramiko, which only ``ssh://`` hosts use, is
imported when one is connected rather than with the SDK.

docker-py's ssh transport imports paramiko whatever the host: 0.1 s of the 0.45 s a run
spends importing before its first container, and of every repeated run. While the SDK is
imported, ``paramiko`` is a stand-in module (:class:`_Deferred`): the transport's
``import paramiko`` binds it, and its first attribute read (only in the transport's methods)
imports the real paramiko. The stand-in is in ``sys.modules`` only during the SDK's import, so
anything else importing paramiko gets the real one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_DEFERRED = "paramiko"
_LOADING = threading.Lock()


class _Deferred(types.ModuleType):
    """A module that imports the real one on the first attribute it does not have."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        with _LOADING:
            real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def _import_sdk() -> None:
    stand_in = None
    if _DEFERRED not in sys.modules and importlib.util.find_spec(_DEFERRED) is not None:
        stand_in = sys.modules[_DEFERRED] = _Deferred(_DEFERRED)
    try:
        import docker.transport  # noqa: F401
    finally:
        if stand_in is not None and sys.modules.get(_DEFERRED) is stand_in:
            del sys.modules[_DEFERRED]


_import_sdk()

import docker  # noqa: E402
import docker.errors  # noqa: E402
from docker.utils.build import PatternMatcher  # noqa: E402

__all__ = ["PatternMatcher", "docker"]
