"""``python -m reprocheck``: the same as the ``reprocheck`` command."""

from __future__ import annotations

from reprocheck.cli import main

main()
