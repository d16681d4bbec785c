"""The ``reprocheck`` command's entry point (reprocheck.__main__)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A Ctrl-C that lands while the CLI imports (click is one of its first imports).
_INTERRUPTED_IMPORT = textwrap.dedent("""
    import sys

    class Interrupts:
        def find_spec(self, name, path=None, target=None):
            if name == "click":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, Interrupts())
    from reprocheck.__main__ import main
    main()
""")


def test_ctrl_c_while_the_cli_imports_is_one_line_and_exit_130() -> None:
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 130
    assert done.stderr == "interrupted\n"


def test_the_command_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "reprocheck", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and "reprocheck" in done.stdout
