"""Moves one pip distribution between images while a hybrid image builds: runs inside the
images (Python >= 3.9, the standard library only), never on the host.

``export NAME DEST``: copy NAME's installed files (those its RECORD lists under its
site-packages folder: its package folders, its dist-info and its bundled ``.libs``) to DEST,
keeping their paths relative to that folder.

``place NAME SOURCE``: delete NAME's own installed files, then copy SOURCE's tree into the
folder NAME was installed in; SOURCE and this script are deleted.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib import metadata
from pathlib import Path, PurePath


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(name: str) -> metadata.Distribution:
    wanted = _normalise(name)
    for dist in metadata.distributions():
        if _normalise(dist.metadata["Name"] or "") == wanted:
            return dist
    raise SystemExit(f"reprocheck: no installed distribution named {name!r}")


def _files(dist: metadata.Distribution) -> tuple[Path, list[PurePath]]:
    """(site-packages folder, its files relative to it), without bytecode caches or files
    outside it (scripts in bin/)."""
    site = Path(str(dist.locate_file("")))
    found = []
    for path in dist.files or ():
        rel = PurePath(str(path))
        if rel.is_absolute() or ".." in rel.parts or "__pycache__" in rel.parts:
            continue
        found.append(rel)
    return site, found


def export(name: str, dest: Path) -> int:
    site, files = _files(_distribution(name))
    for rel in files:
        source = site / rel
        if source.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return 0


def place(name: str, source: Path) -> int:
    site, files = _files(_distribution(name))
    folders: set[PurePath] = set()
    for rel in files:
        path = site / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
        folders.update(p for p in rel.parents if p.parts)
    for folder in sorted(folders, key=lambda f: -len(f.parts)):  # the deepest first
        path = site / folder
        shutil.rmtree(path / "__pycache__", ignore_errors=True)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    shutil.copytree(source, site, dirs_exist_ok=True)
    shutil.rmtree(source, ignore_errors=True)
    Path(__file__).unlink()
    return 0


if __name__ == "__main__":
    command, distribution, folder = sys.argv[1:4]
    sys.exit(export(distribution, Path(folder)) if command == "export"
             else place(distribution, Path(folder)))  # fmt: skip
