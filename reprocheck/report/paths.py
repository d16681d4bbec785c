"""Where the report files asked for on the command line go (``--md``, ``--junit``,
``--html``). Its own module: the CLI names them without importing the renderers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class ReportPaths:
    """Extra report files (--md, --junit, --html); None means not asked for."""

    md: Path | None = None
    junit: Path | None = None
    html: Path | None = None


NO_EXTRA_REPORTS = ReportPaths()
