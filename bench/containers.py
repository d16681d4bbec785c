"""One container per environment (reprocheck) against one container per fixture (naive).

Runs the example pipeline over the example fixtures in one environment both ways, on the
real Docker Engine, in the same process, and prints the times and their ratio. Usage::

    python bench/containers.py [--env bookworm] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from reprocheck.config import load_config
from reprocheck.engine import get_engine
from reprocheck.images import ImageBuilder
from reprocheck.plan import make_plan
from reprocheck.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


def _time_runs(runner_plans: list[tuple[Runner, object]], env: object, image: object) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, (runner, _plan) in enumerate(runner_plans):
            result = runner.run_in(env, image, Path(tmp) / str(k), 1)  # type: ignore[arg-type]
            if result.status != "ok":
                raise SystemExit(f"benchmark run failed: {result.status}: {result.error}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="bookworm")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_config(ROOT / "reprocheck.toml")
    plan = make_plan(config, (args.env,))
    engine = get_engine("docker")
    env = plan.environments[0]
    image = ImageBuilder(engine, config).resolve(env)
    whole = [(Runner(engine, plan, run_id="bench"), plan)]
    split = [
        (Runner(engine, p, run_id="bench"), p)
        for p in (dataclasses.replace(plan, fixtures=(f,)) for f in plan.fixtures)
    ]
    per_env = min(_time_runs(whole, env, image) for _ in range(args.rounds))
    per_fixture = min(_time_runs(split, env, image) for _ in range(args.rounds))
    n = len(plan.fixtures)
    print(f"environment {args.env}, {n} fixtures, best of {args.rounds}")
    print(f"  one container per fixture (baseline): {per_fixture:6.2f} s")
    print(f"  one container per environment:        {per_env:6.2f} s")
    print(f"  speed-up: {per_fixture / per_env:.2f}x")


if __name__ == "__main__":
    main()
