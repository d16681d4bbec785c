"""The picture cache: keys follow every byte, shape, dtype and name; entries round-trip;
links, oversized and unreadable entries are misses, never errors; prune by last use."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from reprocheck.output_store import digest
from reprocheck.report.picture_cache import Fragment, PictureCache, fragment_key, prune


def picture_key(a: np.ndarray, b: np.ndarray, *names: str) -> str:
    return fragment_key(Fragment.PICTURES, digest(a), digest(b), *names)


def test_the_key_changes_with_any_byte_shape_dtype_or_name() -> None:
    a = np.zeros((16, 16), np.float32)
    b = a.copy()
    key = picture_key(a, b, "x", "y")
    assert key == picture_key(a.copy(), b.copy(), "x", "y")
    neg = b.copy()
    neg[3, 4] = -0.0  # the same value, another bit pattern
    changed = [
        picture_key(a, neg, "x", "y"),
        picture_key(a, b.reshape(8, 32), "x", "y"),
        picture_key(a, b.astype(np.float64), "x", "y"),
        picture_key(a, b, "x", "z"),
        picture_key(a, b, "xy", ""),
        picture_key(np.asfortranarray(a + np.eye(16, dtype=np.float32)), b, "x", "y"),
    ]
    assert len({key, *changed}) == len(changed) + 1
    assert fragment_key(Fragment.ULP, digest(a), digest(b), "x", "y") != key  # another kind
    assert picture_key(a, neg, "x", "y") != picture_key(neg, a, "x", "y")  # which is which


def test_entries_round_trip_and_bad_ones_are_misses(tmp_path: Path) -> None:
    cache = PictureCache(tmp_path / "pictures")
    assert cache.get("k") is None
    cache.put("k", "<figure>é</figure>")
    assert cache.get("k") == "<figure>é</figure>"
    (tmp_path / "secret").write_text("not a picture")
    (tmp_path / "pictures" / "l.html").symlink_to(tmp_path / "secret")
    assert cache.get("l") is None
    (tmp_path / "pictures" / "b.html").write_bytes(b"\xff\xfe")
    assert cache.get("b") is None
    PictureCache(None).put("k", "x")  # nothing kept, no error
    assert PictureCache(None).get("k") is None
    blocked = PictureCache(tmp_path / "secret" / "sub")  # a file where the folder would be
    blocked.put("k", "x")
    assert blocked.get("k") is None


def test_prune_removes_what_was_not_used_and_keeps_what_was(tmp_path: Path) -> None:
    folder = tmp_path / "pictures"
    cache = PictureCache(folder)
    for key in ("used", "unused", "fresh"):
        cache.put(key, f"<figure>{key}</figure>")
    old = time.time() - 40 * 86400
    for key in ("used", "unused"):
        os.utime(folder / f"{key}.html", (old, old))
    (folder / ".tmp-left.html").write_text("half")  # a run that died while writing
    os.utime(folder / ".tmp-left.html", (old, old))
    (folder / "a-folder.html").mkdir()  # not ours: left, no error
    assert cache.get("used") == "<figure>used</figure>"  # using it makes it recent
    assert prune(folder, older_than_days=30) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["a-folder.html", "fresh.html",
                                                        "used.html"]  # fmt: skip
    assert prune(folder, older_than_days=30, everything=True) == 2
    assert prune(tmp_path / "none", older_than_days=30) == 0
