"""The ``reprocheck`` command (and ``python -m reprocheck``).

The CLI takes a few tenths of a second to import; a Ctrl-C meanwhile ends the command as a
Ctrl-C during a run does (one line, exit 130), not with a traceback of the import."""

from __future__ import annotations

import sys

from reprocheck.errors import EXIT_INTERRUPTED


def main() -> None:
    try:
        from reprocheck.cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    cli()


if __name__ == "__main__":
    main()
