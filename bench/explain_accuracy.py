"""How much of the example's real multi-release drift `reprocheck explain` settles, and how
long it takes cold and cached, measured in one run.

The example pipeline runs on Debian bullseye, bookworm and trixie (the repo's images); every
drifting output of each pair is explained with the default budget, once with an empty
experiment cache (cold) and once again (cached). An output counts as *settled* when its top
cause has confidence >= 0.9 from an experiment that made the pair agree bit for bit (a
transplant, a knob on both sides, or a combination of them): that cause is proven by the
swap itself. The rest are listed with their top cause, so a reader can judge them.

    python bench/explain_accuracy.py [--keep DIR]

Needs the example's images (`reprocheck images build`); takes a few minutes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ("bullseye", "bookworm", "trixie")
SETTLED = 0.9


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run([sys.executable, "-m", "reprocheck", *args], cwd=root, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip


def _project(folder: Path) -> Path:
    root = folder / "project"
    root.mkdir(parents=True)
    for name in ("example", "fixtures", "images"):
        shutil.copytree(ROOT / name, root / name)
    shutil.copy2(ROOT / "reprocheck.toml", root / "reprocheck.toml")
    return root


def _explain(root: Path, name: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    done = _cli(root, "explain", "--json", name)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"explain failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads((root / name).read_text()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="explain-accuracy-"))
    root = _project(folder)
    envs = [a for r in RELEASES for a in ("--env", r)]
    done = _cli(root, "run", *envs, "-q", "--json", "run.json")
    if done.returncode != 1:
        sys.exit(f"the run did not drift as expected ({done.returncode}): {done.stderr[-2000:]}")
    cold, cold_seconds = _explain(root, "explain-cold.json")
    cached, cached_seconds = _explain(root, "explain-cached.json")
    assert cold["attributions"] == cached["attributions"], "a cached explain must say the same"

    settled: collections.Counter[tuple[str, str]] = collections.Counter()
    open_: set[tuple[str, str, str, float]] = set()
    for item in cold["attributions"]:
        top = next(c for c in item["causes"] if c["kind"] != "stage")
        pair = f"{item['baseline']} -> {item['candidate']}"
        if top["confidence"] >= SETTLED and top["kind"] in ("knob", "package"):
            settled[pair, top["factor"]] += 1
        else:
            open_.add((pair, item["output"], top["factor"], top["confidence"]))
    total = len(cold["attributions"])
    n_settled = sum(settled.values())
    print(f"drifting outputs (output x pair): {total}")
    print(f"settled by an experiment (confidence >= {SETTLED}): {n_settled} "
          f"({100 * n_settled / max(total, 1):.1f}%)")  # fmt: skip
    print(f"experiments: {len(cold['experiments'])}")
    print(f"explain cold: {cold_seconds:.0f} s, cached: {cached_seconds:.1f} s")
    print("\nsettled, by pair and cause:")
    for (pair, factor), n in sorted(settled.items()):
        print(f"  {n:4d}  {pair}: {factor}")
    print("\nnot settled (top cause):")
    for pair, output, factor, confidence in sorted(open_):
        print(f"  {pair}: {output}: {factor} ({confidence})")
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
