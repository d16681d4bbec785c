"""One exception root; every subclass carries an exit code and a how-to-fix text.

The CLI catches only :class:`ReprocheckError`, prints ``str(error)`` on one line and
exits with ``error.exit_code``. A traceback shown to a user is a bug.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a SIGINT


class ReprocheckError(Exception):
    """Root of every error reprocheck reports to a user."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class ConfigError(ReprocheckError):
    """The configuration file is missing, malformed or names something absent."""


class EngineUnavailableError(ReprocheckError):
    """The container engine cannot be reached."""


class EngineError(ReprocheckError):
    """The container engine refused or failed an operation (create, start, wait)."""


class ImageBuildError(ReprocheckError):
    """An environment's image could not be built or bootstrapped."""


class RunNotFoundError(ReprocheckError):
    """A stored run or baseline named by the user does not exist."""


class OutputError(ReprocheckError):
    """An output file cannot be read safely."""


class UnsafeFileError(ReprocheckError):
    """A file cannot be read safely: a symlink, not a regular file, too large, or not the
    JSON it should be (raised by :mod:`reprocheck.safe_files`; callers wrap it with a fix)."""


class StoredRunError(ReprocheckError):
    """A stored run's run.json or fingerprint.json is damaged, of the wrong shape or unsafe."""


class HistoryError(ReprocheckError):
    """The drift history cannot be locked for writing."""
