"""Rendered report fragments kept between runs: the HTML of one output pair's baseline,
candidate and heatmap PNGs, and of its ULP histogram, keyed by the kind of fragment, the
digests the output stores recorded for both arrays (of dtype, shape and bytes) and the
captions' names.

A run whose environments were all reused from the result cache draws the same pictures as
the run before it; encoding them again was most of such a run's report time. With the keys
taken from the stores, a fragment kept is used without loading either array. Stored under
``reports/.cache/pictures`` (a file per fragment, written atomically); an unwritable or
damaged entry only means drawing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import time
from enum import StrEnum
from pathlib import Path

from reprocheck.cache import CACHE_DIR

PICTURES_DIR = "pictures"  # under the reports folder's cache
VERSION = b"2"  # bump when the drawing or the keys change
_MAX_BYTES = 8 << 20


class Fragment(StrEnum):
    PICTURES = "pictures"
    ULP = "ulp"


def fragment_key(kind: Fragment, a: bytes, b: bytes, *names: str) -> str:
    """The key of a fragment drawn from the arrays whose store digests are ``a`` and ``b``."""
    digest = hashlib.sha256(VERSION + b"\0" + kind.value.encode())
    for value in (a, b):
        digest.update(len(value).to_bytes(2, "big") + value)
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
            fragment = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last used, for prune
        return fragment

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


def prune(folder: Path, *, older_than_days: float, everything: bool = False) -> int:
    """Remove the fragments not used for ``older_than_days`` (every one with ``everything``)
    and temporary files left by a run that died; how many fragments went."""
    limit = time.time() - older_than_days * 86400
    removed = 0
    for path in sorted(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []:
        try:
            info = path.lstat()
            fragment = path.suffix == ".html" and not path.name.startswith(".")
            if not (everything or info.st_mtime < limit) or stat.S_ISDIR(info.st_mode):
                continue
            path.unlink()
        except OSError:  # removed meanwhile, or not ours to remove: left
            continue
        removed += fragment
    return removed
