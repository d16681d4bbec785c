"""The machine-readable report: a versioned, JSON-safe dict built from the stage values."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reprocheck.compare.results import _json_float
from reprocheck.comparisons import OutputComparison
from reprocheck.matrix import Matrix
from reprocheck.report import aggregate
from reprocheck.run_model import EnvironmentResult, RunResult, flat_packages
from reprocheck.run_model import fingerprint_section as _section
from reprocheck.store import COMPARISONS_FILE, write_atomic

SCHEMA_VERSION = 2


def _version(section: Any) -> str | None:
    return section.get("version") if isinstance(section, dict) else None


def fingerprint_summary(env: EnvironmentResult) -> dict[str, Any]:
    fp = env.fingerprint
    os_release = _section(fp, "os")
    cpu = _section(fp, "cpu")
    return {
        "os": os_release.get("PRETTY_NAME"),
        "os_release": os_release,
        "kernel": fp.get("kernel"),
        "machine": fp.get("machine"),
        "glibc": fp.get("glibc"),
        "python": _version(fp.get("python")),
        "numpy": _version(fp.get("numpy")),
        "cv2": _version(fp.get("cv2")),
        "cpu_model": cpu.get("model"),
        "packages": flat_packages(fp),
        "loaded_libraries": fp.get("loaded_libraries") or [],
        "library_packages": fp.get("library_packages") or {},
        "env": fp.get("env") or {},
        "file": str(env.meta_dir / "fingerprint.json"),
    }


def environment_json(env: EnvironmentResult) -> dict[str, Any]:
    return {
        "name": env.name,
        "image": env.image,
        "image_ref": env.image_ref,
        "image_id": env.image_id,
        "image_digest": env.image_digest,
        "status": env.status,
        "error": env.error,
        "outputs_dir": str(env.outputs_dir),
        "seconds": env.seconds,
        "fixtures": [
            {"fixture": f.fixture, "status": f.status, "seconds": f.seconds, "error": f.error}
            for f in env.fixtures
        ],
        "fingerprint": fingerprint_summary(env),
        "image_change": None if env.image_change is None else asdict(env.image_change),
        "left_emulator": list(env.left_emulator),
    }


def comparison_json(item: OutputComparison) -> dict[str, Any]:
    data: dict[str, Any] = {
        "output": item.output,
        "baseline": item.baseline,
        "candidate": item.candidate,
        "verdict": item.verdict,
        "note": item.note,
    }
    if item.metrics is not None:
        metrics = item.metrics.as_json()
        metrics.pop("verdict", None)
        data |= metrics
    return data


def report_dict(
    run: RunResult, matrix: Matrix, references: tuple[EnvironmentResult, ...] = ()
) -> dict[str, Any]:
    """The report; ``references`` are stored environments (baselines, another run) compared.

    Comparisons, groups and agreement entries are listed in full up to
    :data:`aggregate.LISTED` each, else the worst of them; ``listed`` says how many of
    how many, and every comparison is in :data:`COMPARISONS_FILE`."""
    comparisons = matrix.comparisons
    fixtures = sorted({f.fixture for env in (*run.environments, *references)
                       for f in env.fixtures}, key=len, reverse=True)  # fmt: skip
    listed = aggregate.listed_comparisons(comparisons)
    groups = aggregate.groups(comparisons, fixtures)
    agreement = matrix.agreement.listed(aggregate.LISTED)
    pair_counts = comparisons.pair_counts()
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "run_dir": str(run.run_dir),
        "config": str(run.config_source),
        "started": run.started,
        "environments": [environment_json(env) for env in run.environments],
        "references": [environment_json(env) for env in references],
        "pairs": [list(pair) for pair in matrix.pairs],
        "summary": matrix.counts(),
        "pair_summary": [
            {"baseline": base, "candidate": cand, "verdicts": pair_counts.get((base, cand), {})}
            for base, cand in matrix.pairs
        ],
        "listed": {
            "comparisons": len(listed),
            "of_comparisons": len(comparisons),
            "groups": len(groups),
            "agreement": len(agreement),
            "of_outputs": len(matrix.agreement),
            "file": COMPARISONS_FILE,
        },
        "comparisons": [comparison_json(item) for item in listed],
        "groups": [dict(g, worst=comparison_json(g["worst"])) for g in groups],
        "agreement": agreement,
        "agreement_patterns": matrix.agreement.patterns(),
        "decisions": aggregate.decisions(comparisons, fixtures),
        "metrics": [
            {
                "output": m.output,
                "unit": m.unit,
                "scale": m.scale,
                "atol": m.atol,
                "rtol": m.rtol,
                "values": {env: _json_float(v) for env, v in m.values.items()},
            }
            for m in matrix.metrics
        ],
        "nondeterministic": [
            {
                "output": n.output,
                "environment": n.environment,
                "repeats": n.repeats,
                "max_abs": n.max_abs,
                "max_ulp": n.max_ulp,
            }
            for n in matrix.noise
        ],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Compact JSON: without ``indent`` the json module encodes in C, several times faster
    on reports of many outputs (``python -m json.tool`` shows it indented)."""
    write_atomic(path, json.dumps(data, separators=(",", ":"), allow_nan=False))
