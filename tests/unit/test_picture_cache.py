"""The picture cache: keys follow every byte, shape, dtype and name; entries round-trip;
links, oversized and unreadable entries are misses, never errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reprocheck.report.picture_cache import PictureCache, picture_key


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
