"""The published JSON Schema of the report, and a synthetic report the renderer tests share.

``synthetic_report`` builds a report the way a run does (RunResult + Matrix -> report_dict)
from small arrays written to disk, so the HTML renderer can load them back.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from reprocheck.compare import DecisionRule, Tolerance, agreement_classes, compare_arrays
from reprocheck.matrix import Matrix, Noise, OutputComparison
from reprocheck.report.json_report import report_dict
from reprocheck.run_model import EnvironmentResult, FixtureResult, RunResult

DATA = Path(__file__).parent.parent / "data"
ENVIRONMENTS = ("old", "new", "broken")


def _arrays(env: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:24, 0:32]
    photo = np.stack([xx * 8, yy * 10, (xx + yy) * 4], axis=-1).astype(np.uint8)
    field = (np.sin(xx / 5.0) * np.cos(yy / 4.0)).astype(np.float32)
    probs = rng.random((1, 10)).astype(np.float32)
    if env == "new":
        photo[5:9, 10:20, 1] += 3
        field = field + np.float32(1e-6) * (xx > 16)
        probs = probs.copy()
        probs[0, 3] = probs.max() + 0.01
    return {
        "photo.jpg/resize/cubic": photo,
        "photo.jpg/filter/field": field.astype(np.float32),
        "photo.jpg/dnn/probs": probs,
        "photo.jpg/decode/ok": np.array(1, dtype=np.int64),
    }


FINGERPRINTS: dict[str, dict[str, Any]] = {
    "old": {"os": {"PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)"}, "glibc": "2.31",
            "python": {"version": "3.9.2"}, "numpy": {"version": "1.19.5"},
            "cv2": {"version": "4.5.1", "build": {"JPEG": "libjpeg (ver 62)", "ZLib": "1.2.11"}},
            "cpu": {"model": "Test CPU", "flags": ["sse2", "avx2"]},
            "packages": {"dpkg": {"libc6": "2.31-13", "libjpeg62-turbo": "1:2.0.6-4"},
                         "pip": {"numpy": "1.19.5"}}},
    "new": {"os": {"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}, "glibc": "2.36",
            "python": {"version": "3.11.2"}, "numpy": {"version": "1.24.2"},
            "cv2": {"version": "4.6.0", "build": {"JPEG": "libjpeg (ver 62)", "ZLib": "1.2.13"}},
            "cpu": {"model": "Test CPU", "flags": ["sse2", "avx2", "avx512f"]},
            "packages": {"dpkg": {"libc6": "2.36-9", "libjpeg62-turbo": "1:2.1.5-2",
                                  "libopenblas0": "0.3.21"},
                         "pip": {"numpy": "1.24.2"}}},
    "broken": {},
}  # fmt: skip


def _environment(root: Path, name: str) -> EnvironmentResult:
    outputs, meta = root / name / "outputs", root / name / "meta"
    meta.mkdir(parents=True)
    (meta / "fingerprint.json").write_text(json.dumps(FINGERPRINTS[name]))
    failed = name == "broken"
    if not failed:
        outputs.mkdir(parents=True)
        arrays = {key.split("/", 1)[1]: value for key, value in _arrays(name).items()}
        np.savez(outputs / "photo.jpg.npz", **arrays)  # type: ignore[arg-type]
    return EnvironmentResult(
        name=name, image=f"images/{name}", image_ref=f"reprocheck/{name}:abc",
        image_id=None if failed else f"sha256:{name:0<64}"[:71], status="error" if failed else "ok",
        error="container exited with 1" if failed else None, outputs_dir=outputs,
        meta_dir=meta, fingerprint=FINGERPRINTS[name],
        fixtures=(FixtureResult(fixture="photo.jpg", status="error" if failed else "ok",
                                seconds=0.5),),
        seconds=1.5,
    )  # fmt: skip


def _comparisons(base: str, cand: str) -> list[OutputComparison]:
    a, b = _arrays(base), _arrays(cand)
    found = []
    for output in sorted(a):
        decision = DecisionRule(pattern="*/dnn/*", kind="argmax") if "dnn" in output else None
        metrics = compare_arrays(a[output], b[output], Tolerance(), decision)
        found.append(OutputComparison(output=output, baseline=base, candidate=cand,
                                      verdict=metrics.verdict, metrics=metrics))  # fmt: skip
    return found


def synthetic_report(root: Path) -> dict[str, Any]:
    """A report of three environments: 'new' drifts from 'old', 'broken' failed."""
    run = RunResult(
        run_id="20250101-000000-abcd", run_dir=root, config_source=root / "reprocheck.toml",
        started="2025-01-01T00:00:00+00:00",
        environments=tuple(_environment(root, name) for name in ENVIRONMENTS),
    )  # fmt: skip
    broken = [
        OutputComparison(output=output, baseline="old", candidate="broken", verdict="error",
                         note="broken: error: container exited with 1")
        for output in sorted(_arrays("old"))
    ]  # fmt: skip
    matrix = Matrix(
        pairs=(("old", "new"), ("old", "broken")),
        comparisons=(*_comparisons("old", "new"), *broken),
        agreement={o: agreement_classes({"old": a, "new": _arrays("new")[o], "broken": None})
                   for o, a in _arrays("old").items()},
        noise=(Noise(output="photo.jpg/dnn/probs", environment="new", repeats=3,
                     max_abs=1e-7, max_ulp=2),),
    )  # fmt: skip
    report = report_dict(run, matrix)
    report["attributions"] = [
        {"output": "photo.jpg/resize/cubic", "baseline": "old", "candidate": "new",
         "causes": [{"factor": "libjpeg62-turbo", "kind": "package", "confidence": 0.8,
                     "evidence": "1:2.0.6-4 -> 1:2.1.5-2 <script>alert(1)</script>"}]},
    ]  # fmt: skip
    return report


def schema() -> dict[str, Any]:
    text = resources.files("reprocheck.report").joinpath("schema.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.fixture
def validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(schema())


def test_synthetic_report_is_valid(tmp_path: Path, validator: Any) -> None:
    report = synthetic_report(tmp_path)
    verdicts = {c["verdict"] for c in report["comparisons"]}
    assert {"drift", "identical", "error"} <= verdicts
    validator.validate(json.loads(json.dumps(report, allow_nan=False)))


def _stored(tmp_path: Path) -> dict[str, Any]:
    """A report as a reader finds it: the synthetic one, through JSON."""
    data: dict[str, Any] = json.loads(json.dumps(synthetic_report(tmp_path), allow_nan=False))
    return data


def test_schema_2_counts_every_comparison(tmp_path: Path, validator: Any) -> None:
    report = _stored(tmp_path)
    listed = report["listed"]
    assert listed["comparisons"] == listed["of_comparisons"] == len(report["comparisons"])
    assert sum(report["summary"].values()) == listed["of_comparisons"]
    assert sum(sum(p["verdicts"].values()) for p in report["pair_summary"]) == sum(
        report["summary"].values()
    )
    # photo.jpg is the fixture: its outputs are grouped by key across fixtures.
    keys = {"*/" + c["output"].removeprefix("photo.jpg/") for c in report["comparisons"]}
    assert {g["key"] for g in report["groups"]} == keys


@pytest.mark.parametrize(
    "break_it",
    [
        lambda r: r.update(schema_version=1),
        lambda r: r.pop("listed"),
        lambda r: r["groups"][0].pop("worst"),
        lambda r: r["pair_summary"][0]["verdicts"].update(drift=-1),
        lambda r: r.pop("comparisons"),
        lambda r: r["comparisons"][0].update(verdict="fine"),
        lambda r: r["comparisons"][0].update(max_abs="big"),
        lambda r: r["comparisons"][0].pop("mismatched"),
        lambda r: r["environments"][0].pop("fingerprint"),
        lambda r: r["environments"][0]["fingerprint"].update(glibc=2.31),
        lambda r: r["pairs"].append(["only-one"]),
        lambda r: r["summary"].update(drift=-1),
        lambda r: r["attributions"][0].pop("causes"),
    ],
)
def test_broken_report_fails(tmp_path: Path, validator: Any, break_it: Any) -> None:
    report = _stored(tmp_path)
    break_it(report)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(report)


def test_future_fields_are_allowed(tmp_path: Path, validator: Any) -> None:
    report = _stored(tmp_path)
    report["history"] = {"runs": 3}
    report["comparisons"][0]["heatmap"] = "new metric"
    report["environments"][0]["fingerprint"]["blas"] = "openblas"
    validator.validate(report)
