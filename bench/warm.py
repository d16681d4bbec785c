"""A warm `reprocheck run` of the example against its floor, measured in one run.

The floor is the slowest environment's bare container: the same harness, image, mounts and
limits (the runner's own container spec) started, waited for and removed through the engine
with nothing else around it (no config, no image resolution, no comparing, no reports).
The warm run is the whole `reprocheck run` of the example with every image built and the
result cache off, environments in parallel as by default. Prints both and the ratio, and
the CPU the bare containers cost the machine (``/proc/stat``): divided by the cores, that is
the least any run of them can take, whatever it does around them.

Then the run that changed nothing (every environment cached, the earlier run's reports
standing: reprocheck.reuse), as a user starts it (the installed console script when there is
one, else ``python -m reprocheck``), against the interpreter's own start on the same machine.
It uses the example's own reports folder, as ``reprocheck run`` there does.

    python bench/warm.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from reprocheck.config import EnvironmentConfig, load_config
from reprocheck.engine import get_engine
from reprocheck.images import ImageBuilder
from reprocheck.plan import make_plan
from reprocheck.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Floor:
    alone: dict[str, float]  # each environment's bare container, one at a time
    cpu: dict[str, float]  # the CPU-seconds the machine spent on each of them (alone)
    together: float  # all of them as the run starts them (jobs at a time), to the last


def busy_seconds() -> float:
    """CPU-seconds every core of the machine has spent not idle since boot (/proc/stat):
    a container's own processes, the engine's and the kernel's work for it."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def floor_seconds(jobs: int) -> Floor:
    config = load_config(ROOT / "reprocheck.toml")
    plan = make_plan(config, ())
    engine = get_engine(config.run.engine)
    builder = ImageBuilder(engine, config)
    runner = Runner(engine, plan, run_id="bench-floor")
    images = {env.name: builder.resolve(env) for env in plan.environments}

    def bare(env: EnvironmentConfig, folder: Path) -> float:
        outputs, meta = folder / "outputs", folder / "meta"
        for path in (outputs, meta):
            path.mkdir(parents=True)
            path.chmod(0o777)
        spec_json = runner._spec_json(plan.fixtures)  # the runner's own spec, nothing added
        (meta / "spec.json").write_text(json.dumps(spec_json, indent=1))
        spec = runner._container_spec(env, images[env.name], outputs, meta)
        started = time.perf_counter()
        outcome = engine.run(spec)
        if outcome.exit_code != 0:
            raise SystemExit(f"{env.name}: bare container exited {outcome.exit_code}")
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory(dir=ROOT / "reports") as tmp:
        alone, cpu = {}, {}
        for env in plan.environments:
            before = busy_seconds()
            alone[env.name] = bare(env, Path(tmp) / "alone" / env.name)
            cpu[env.name] = busy_seconds() - before
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda env: bare(env, Path(tmp) / "together" / env.name),
                          plan.environments))  # fmt: skip
        together = time.perf_counter() - started
    return Floor(alone=alone, cpu=cpu, together=together)


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


def _command() -> list[str]:
    """``reprocheck`` as installed beside this interpreter, else ``python -m reprocheck``."""
    script = Path(sys.executable).parent / "reprocheck"
    if script.is_file():
        return [str(script)]
    found = shutil.which("reprocheck")
    return [found] if found else [sys.executable, "-m", "reprocheck"]


def repeated_seconds(rounds: int) -> tuple[float, float]:
    """The run that changed nothing (best of ``rounds``, after one run that records it), and
    the interpreter's own start."""

    # As installed: modules compiled once (a PYTHONDONTWRITEBYTECODE in this shell would make
    # every start compile reprocheck's modules again).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def timed(command: list[str]) -> float:
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                              env=env)  # fmt: skip
        if done.returncode not in (0, 1):
            raise SystemExit(f"{command} failed ({done.returncode}): {done.stderr[-500:]}")
        return time.perf_counter() - started

    run = [*_command(), "run"]  # the summary printed, as a user sees it
    timed(run)  # compares when something changed since the last run; records it
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if "nothing changed since run" not in done.stderr:
        raise SystemExit(f"the second run was not a repeated one: {done.stderr[-500:]}")
    repeated = min(timed(run) for _ in range(rounds))
    python = min(timed([sys.executable, "-c", "pass"]) for _ in range(rounds))
    return repeated, python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    jobs = load_config(ROOT / "reprocheck.toml").run.jobs or os.cpu_count() or 1
    floors = [floor_seconds(jobs) for _ in range(args.rounds)]
    runs = [run_seconds() for _ in range(args.rounds)]
    alone = {name: min(f.alone[name] for f in floors) for name in floors[0].alone}
    slowest, together, run = max(alone.values()), min(f.together for f in floors), min(runs)
    print(f"warm example run against its floor, best of {args.rounds}, {jobs} jobs")
    for name, seconds in alone.items():
        print(f"  bare container {name:16} {seconds:6.2f} s")
    print(f"  floor: slowest bare container    {slowest:6.2f} s")
    print(f"  floor: all bare containers, {jobs} at a time {together:6.2f} s")
    cpu = {name: min(f.cpu[name] for f in floors) for name in floors[0].cpu}
    cores = os.cpu_count() or 1
    print(f"  CPU the bare containers cost (/proc/stat): {sum(cpu.values()):.2f} CPU-s, at "
          f"best {sum(cpu.values()) / cores:.2f} s on {cores} cores = "
          f"{sum(cpu.values()) / cores / slowest:.2f}x the slowest container")  # fmt: skip
    print(f"  reprocheck run (warm, no cache)  {run:6.2f} s = {run / slowest:.2f}x the slowest "
          f"container, {run / together:.2f}x all of them")  # fmt: skip
    repeated, python = repeated_seconds(max(args.rounds, 5))
    print(f"nothing changed (every environment cached), best of {max(args.rounds, 5)}")
    print(f"  reprocheck run (repeated run)    {repeated:6.2f} s = {repeated / python:.1f}x "
          f"the interpreter's start ({python:.3f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
