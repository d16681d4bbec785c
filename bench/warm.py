"""A warm `reprocheck run` of the example against its floor, measured in one run.

The floor is the slowest environment's bare container: the same harness, image, mounts and
limits (the runner's own container spec) started, waited for and removed through the engine
with nothing else around it (no config, no image resolution, no comparing, no reports).
The warm run is the whole `reprocheck run` of the example with every image built and the
result cache off, environments in parallel as by default. Prints both, the ratio, and where
the rest of the run's time went (from the run's progress and report timings).

    python bench/warm.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reprocheck.config import load_config
from reprocheck.engine import get_engine
from reprocheck.images import ImageBuilder
from reprocheck.plan import make_plan
from reprocheck.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


def floor_seconds() -> dict[str, float]:
    """Each environment's bare container run, in seconds."""
    config = load_config(ROOT / "reprocheck.toml")
    plan = make_plan(config, ())
    engine = get_engine(config.run.engine)
    builder = ImageBuilder(engine, config)
    runner = Runner(engine, plan, run_id="bench-floor")
    seconds = {}
    for env in plan.environments:
        image = builder.resolve(env)
        with tempfile.TemporaryDirectory(dir=ROOT / "reports") as tmp:
            outputs, meta = Path(tmp) / "outputs", Path(tmp) / "meta"
            outputs.mkdir()
            meta.mkdir()
            outputs.chmod(0o777)
            meta.chmod(0o777)
            runner._write_spec(meta)
            spec = runner._container_spec(env, image, outputs, meta)
            started = time.perf_counter()
            outcome = engine.run(spec)
            seconds[env.name] = time.perf_counter() - started
            if outcome.exit_code != 0:
                raise SystemExit(f"{env.name}: bare container exited {outcome.exit_code}")
    return seconds


def run_seconds() -> float:
    with tempfile.TemporaryDirectory(dir=ROOT / "reports") as tmp:
        command = [sys.executable, "-m", "reprocheck.cli", "run", "-q", "--no-cache",
                   "--out", str(Path(tmp) / "run")]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"reprocheck run failed ({done.returncode}): {done.stderr[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    floors = [floor_seconds() for _ in range(args.rounds)]
    runs = [run_seconds() for _ in range(args.rounds)]
    best = {name: min(f[name] for f in floors) for name in floors[0]}
    floor = max(best.values())
    run = min(runs)
    print(f"warm example run against its floor, best of {args.rounds}")
    for name, seconds in best.items():
        print(f"  bare container {name:14} {seconds:6.2f} s")
    print(f"  floor (slowest bare container) {floor:6.2f} s")
    print(f"  all bare containers in a row   {sum(best.values()):6.2f} s")
    print(f"  reprocheck run (warm, no cache){run:6.2f} s  = {run / floor:.2f}x the floor")


if __name__ == "__main__":
    main()
