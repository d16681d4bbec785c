"""merge keeps the repeat runs of each job, and with them the noise floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from runs import stored_env, stored_run

from reprocheck.config import load_config
from reprocheck.matrix import build_matrix
from reprocheck.store import load_run, save_run
from reprocheck.stored import merge_runs

CONFIG = """
[pipeline]
callable = "p.py:run"
[[environments]]
name = "a"
image = "debian:bookworm"
[[environments]]
name = "b"
image = "debian:trixie"
"""


def test_merge_keeps_repeats_and_the_noise_floor(make_project, tmp_path: Path) -> None:
    config = load_config(make_project(CONFIG))
    job_a = config.reports_dir / "job-a"
    a = stored_env(job_a, "a", {"f": {"v": np.zeros(3)}})
    save_run(stored_run(job_a, (a,)))
    job_b = config.reports_dir / "job-b"
    b = stored_env(job_b, "b", {"f": {"v": np.full(3, 0.5)}})
    again = stored_env(job_b, "b", {"f": {"v": np.full(3, 0.75)}}, repeat=2,
                       folder=job_b / "environments" / "b" / "repeats" / "2")  # fmt: skip
    save_run(stored_run(job_b, (b,), repeats=(again,)))
    merged = merge_runs(config, [job_a, job_b], tmp_path / "merged")
    assert [(e.name, e.repeat) for e in merged.repeats] == [("b", 2)]
    stored = load_run(tmp_path / "merged")
    (repeat,) = stored.repeats
    assert repeat.outputs_dir == tmp_path / "merged/environments/b/repeats/2/outputs"
    assert (repeat.outputs_dir / "f.npz").is_file()
    (item,) = build_matrix(config, stored).comparisons
    assert item.verdict == "nondeterministic"
