"""reprocheck: run one numeric pipeline across OS container images and explain drift."""

from __future__ import annotations

__version__ = "0.1.0"
