"""Reading files a pipeline could have planted, without following them anywhere.

A run folder is written partly from inside containers, so any file in it may be a symlink to
a host file, a FIFO that blocks a reader, or an endless stream. These readers open the last
path component with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a FIFO cannot hang the open),
accept regular files only, and read at most ``limit`` bytes. Every failure is one
:class:`UnsafeFileError` naming the file; callers wrap it in their own error with a fix.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from reprocheck.errors import UnsafeFileError

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _open_regular(path: Path) -> int:
    """A descriptor of ``path`` opened without following a final symlink; regular files only."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else _reason(exc)
        raise UnsafeFileError(f"cannot read {path}: {reason}") from exc
    except ValueError as exc:  # a NUL byte in the path
        raise UnsafeFileError(f"cannot read {path!r}: {exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFileError(f"cannot read {path}: it is not a regular file")
    return fd


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for binary reading as :func:`read_regular_bytes` opens it."""
    return os.fdopen(_open_regular(path), "rb")


def read_regular_bytes(path: Path, limit: int | None = None) -> bytes:
    """The content of the regular file ``path`` (never a symlink's target), at most ``limit``
    bytes; a larger file raises :class:`UnsafeFileError` instead of being cut short."""
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read() if limit is None else handle.read(limit + 1)
    except OSError as exc:
        raise UnsafeFileError(f"cannot read {path}: {_reason(exc)}") from exc
    if limit is not None and len(data) > limit:
        raise UnsafeFileError(f"{path} is larger than {limit:,} bytes")
    return data


def read_json_object(
    path: Path, limit: int | None = None,
    pairs_hook: Callable[[list[tuple[str, Any]]], dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The JSON object stored in ``path`` (read as :func:`read_regular_bytes` does); each
    object built by ``pairs_hook`` when given (json's ``object_pairs_hook``)."""
    data = read_regular_bytes(path, limit)
    try:
        value = json.loads(data, object_pairs_hook=pairs_hook)
    except RecursionError as exc:  # "[[[[..." deeper than the parser's stack
        raise UnsafeFileError(f"{path} is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer with too many digits
        raise UnsafeFileError(f"{path} is not valid JSON: {_first_line(exc)}") from exc
    if not isinstance(value, dict):
        raise UnsafeFileError(f"{path} holds {json_kind(value)}, not a JSON object")
    return value


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words ("a list", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    kinds = ((dict, "an object"), (list, "a list"), (str, "a string"), ((int, float), "a number"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _reason(exc: OSError) -> str:
    return exc.strerror or _first_line(exc)


def utf8_text(text: str) -> tuple[str, bool]:
    """``text`` as valid UTF-8 (a JSON key may hold a lone surrogate, a file name any bytes),
    and whether it had to be escaped to be so."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8"), True
    return text, False
