"""Rendered pictures kept between runs: the HTML fragment of one output pair's baseline,
candidate and heatmap PNGs, keyed by the sha256 of both arrays and the captions' names.

A run whose environments were all reused from the result cache draws the same pictures as
the run before it; encoding them again was most of such a run's report time. Stored under
``reports/.cache/pictures`` (a file per fragment, written atomically); an unwritable or
damaged entry only means drawing again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from reprocheck.cache import CACHE_DIR

PICTURES_DIR = "pictures"  # under the reports folder's cache
VERSION = b"1"  # bump when the drawing changes
_MAX_BYTES = 8 << 20


def picture_key(a: np.ndarray, b: np.ndarray, *names: str) -> str:
    digest = hashlib.sha256(VERSION)
    for array in (a, b):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
    for name in names:
        digest.update(b"\0" + name.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def pictures_folder(reports_dir: Path) -> Path:
    """The project's picture cache, whichever folder a run (``--out``, derived, merged) is
    written to."""
    return reports_dir / CACHE_DIR / PICTURES_DIR


class PictureCache:
    """Fragments by key in ``folder`` (None: nothing kept)."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder

    def get(self, key: str) -> str | None:
        if self._folder is None:
            return None
        path = self._folder / f"{key}.html"
        try:
            if path.is_symlink() or path.stat().st_size > _MAX_BYTES:
                return None
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def put(self, key: str, fragment: str) -> None:
        if self._folder is None:
            return
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=self._folder, prefix=".tmp-", suffix=".html")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(fragment)
            Path(temp).replace(self._folder / f"{key}.html")
        except OSError:
            return
