"""The workflows of issues 3, 4 and 5 end to end, on the example and real containers.

Each scenario runs ``reprocheck`` as a subprocess in a copy of the example project under
``tmp_path`` (runs write ``reports/``, ``baselines/`` and the history next to the config;
images are cached by content, so the copies build nothing). Module-scoped fixtures run each
sequence of commands once and keep what the tests look at, so no test depends on another's
order. The numeric checks recompute every metric from the stored ``.npz`` files with plain
numpy and Python integers, written here without looking at ``reprocheck.compare``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import REPO_ROOT, toml_environments, write_project

pytestmark = pytest.mark.docker

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXAMPLE_FILES = ("reprocheck.toml", "example", "fixtures", "images")
FAILING = ("drift", "incomparable", "missing")  # what JUnit reports as failures
ROWS_RULE = "*/keypoints/*"  # the example's match = "rows" rule (atol 0.5)


def reprocheck(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI of this checkout (PYTHONPATH first: an editable install elsewhere must not
    answer for it)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "reprocheck.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=1800,  # a guard against a hang, not an assertion: cold builds are slow
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str], *codes: int) -> subprocess.CompletedProcess[str]:
    assert proc.returncode in codes, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def example_project(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in EXAMPLE_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)
    return root


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def as_float(value: Any) -> float | None:
    return None if value is None else float(value)  # JSON carries "nan"/"inf" as strings


# --- an independent comparer ---------------------------------------------------------------------


def stored_array(outputs_dir: str, output: str) -> np.ndarray | None:
    """``<fixture>.npz`` holds the fixture's outputs under the keys after the fixture path."""
    folder = Path(outputs_dir)
    for npz in folder.glob("*.npz"):
        fixture = npz.name.removesuffix(".npz")
        if output.startswith(fixture + "/"):
            with np.load(npz, allow_pickle=False) as arrays:
                key = output[len(fixture) + 1 :]
                return arrays[key] if key in arrays.files else None
    return None


def stored_outputs(outputs_dir: str) -> set[str]:
    names = set()
    for npz in Path(outputs_dir).glob("*.npz"):
        with np.load(npz, allow_pickle=False) as arrays:
            names |= {f"{npz.name.removesuffix('.npz')}/{key}" for key in arrays.files}
    return names


def real_view(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        return x.view(x.real.dtype).reshape((*x.shape, 2))
    return x


def ordinal(bits: int, width: int) -> int:
    """A float's place on the number line from its bit pattern: sign-magnitude to a signed
    Python int, so -0.0 and +0.0 are both 0 and nothing can overflow."""
    sign = 1 << (width - 1)
    return -(bits - sign) if bits & sign else bits


def ulp_distance(x: np.generic, y: np.generic) -> int:
    width = 8 * x.dtype.itemsize
    as_bits = np.dtype(f"u{x.dtype.itemsize}")
    x_bits = int(np.array(x).view(as_bits))
    y_bits = int(np.array(y).view(as_bits))
    return abs(ordinal(x_bits, width) - ordinal(y_bits, width))


def ulp_by_stepping(x: np.generic, y: np.generic, limit: int) -> int | None:
    """The slow, obvious reference: count ``nextafter`` steps from x to y (None past limit)."""
    steps = 0
    while x != y:
        x = np.nextafter(x, y)
        steps += 1
        if steps > limit:
            return None
    return steps


@dataclass(frozen=True, kw_only=True)
class Expected:
    bit_identical: bool
    total: int
    mismatched: int
    max_abs: float | None
    max_ulp: int | None


def recompute(a: np.ndarray, b: np.ndarray) -> Expected:
    """bit_identical, total, mismatched (NaN==NaN, +0==-0), max_abs and max_ulp of b vs a."""
    identical = same_bytes(a, b)
    x, y = real_view(a).ravel(), real_view(b).ravel()
    if x.dtype.kind != "f":  # integers and bools: exact, distance |a - b|
        gaps = [abs(int(p) - int(q)) for p, q in zip(x.tolist(), y.tolist(), strict=True)]
        worst = max(gaps, default=0)
        mismatched = sum(g != 0 for g in gaps)
        return Expected(bit_identical=identical, total=x.size, mismatched=mismatched,
                        max_abs=float(worst), max_ulp=worst)  # fmt: skip
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    differ = (nan_x != nan_y) | (~nan_x & ~nan_y & (x != y))
    comparable = ~nan_x & ~nan_y
    places = np.flatnonzero(differ & comparable)
    some = bool(comparable.any())
    return Expected(
        bit_identical=identical,
        total=x.size,
        mismatched=int(np.count_nonzero(differ)),
        max_abs=max((abs(float(x[i]) - float(y[i])) for i in places), default=0.0)
        if some else None,
        max_ulp=max((ulp_distance(x[i], y[i]) for i in places), default=0) if some else None,
    )  # fmt: skip


def check_ulp_by_stepping(a: np.ndarray, b: np.ndarray, sample: int = 16) -> int:
    """Cross-check ``ulp_distance`` with nextafter stepping on small distances; the count."""
    x, y = real_view(a).ravel(), real_view(b).ravel()
    if x.dtype.kind != "f":
        return 0
    checked = 0
    for i in np.flatnonzero((x != y) & np.isfinite(x) & np.isfinite(y)):
        if checked == sample:
            break
        expected = ulp_distance(x[i], y[i])
        if expected <= 64:
            assert ulp_by_stepping(x[i], y[i], 64) == expected, (x[i], y[i])
            checked += 1
    return checked


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def recomputed_classes(arrays: dict[str, np.ndarray]) -> set[frozenset[str]]:
    """Environments grouped by bit-identical arrays."""
    classes: list[tuple[np.ndarray, list[str]]] = []
    for name, array in arrays.items():
        home = next((c for c in classes if same_bytes(c[0], array)), None)
        if home is None:
            classes.append((array, [name]))
        else:
            home[1].append(name)
    return {frozenset(names) for _, names in classes}


# --- 1. the comparison, recomputed (issue 3) -----------------------------------------------------


@pytest.fixture(scope="module")
def three_debian(docker_engine, debian_bases, tmp_path_factory) -> dict[str, Any]:
    root = example_project(tmp_path_factory.mktemp("three") / "project")
    proc = ok(reprocheck(root, "run", "--env", "bullseye", "--env", "bookworm", "--env", "trixie",
                         "--json", "r.json", "--junit", "j.xml", "--md", "m.md"), 1)  # fmt: skip
    return {"root": root, "proc": proc, "report": load_json(root / "r.json")}


def _arrays(report: dict[str, Any], item: dict[str, Any]) -> tuple[Any, Any]:
    dirs = {env["name"]: env["outputs_dir"] for env in report["environments"]}
    return (stored_array(dirs[item["baseline"]], item["output"]),
            stored_array(dirs[item["candidate"]], item["output"]))  # fmt: skip


def test_every_comparison_matches_an_independent_comparer(three_debian) -> None:
    report = three_debian["report"]
    element_wise = stepped = 0
    for item in report["comparisons"]:
        a, b = _arrays(report, item)
        assert a is not None and b is not None, item  # the example's outputs exist everywhere
        where = (item["output"], item["candidate"])
        assert item["dtype"] == [str(a.dtype), str(b.dtype)], where
        assert item["shape"] == [list(a.shape), list(b.shape)], where
        if item["rule"] == ROWS_RULE:
            _check_rows(item, a, b)
            continue
        expected = recompute(a, b)
        reported = Expected(bit_identical=item["bit_identical"], total=item["total"],
                            mismatched=item["mismatched"], max_abs=as_float(item["max_abs"]),
                            max_ulp=item["max_ulp"])  # fmt: skip
        assert reported == expected, where
        stepped += check_ulp_by_stepping(a, b)
        element_wise += 1
    assert element_wise > 300  # 2 pairs x the example's outputs, less the keypoints
    assert stepped > 0  # the nextafter cross-check of the ULP reference ran on real drift


def _check_rows(item: dict[str, Any], a: np.ndarray, b: np.ndarray) -> None:
    """match = "rows": metrics describe matched row pairs, so check what rows imply."""
    rows = item["rows"]
    same = same_bytes(a, b)
    assert item["bit_identical"] == same
    assert rows["matched"] + rows["only_in_baseline"] == a.shape[0]
    assert rows["matched"] + rows["only_in_candidate"] == b.shape[0]
    if same:  # nothing to compare in an empty array: no ULP figure at all
        assert (item["mismatched"], rows["only_in_baseline"]) == (0, 0)
        assert item["max_ulp"] == (0 if a.size else None)
    elif item["verdict"] == "within_tolerance":
        assert as_float(rows["max_displacement"]) <= 0.5  # the rule's atol


def test_verdicts_follow_the_tolerance(three_debian) -> None:
    """Exact by default ({ulp = 0}): identical iff bit-identical, else drift when a value
    differs; rows rule: drift only when rows are left unmatched."""
    report = three_debian["report"]
    seen = Counter(item["verdict"] for item in report["comparisons"])
    assert seen["drift"] > 0 and seen["identical"] > 0  # the example drifts by design
    for item in report["comparisons"]:
        assert (item["verdict"] == "identical") == item["bit_identical"], item["output"]
        if item["rule"] == ROWS_RULE:
            unmatched = item["rows"]["only_in_baseline"] + item["rows"]["only_in_candidate"]
            if item["verdict"] == "drift":
                assert unmatched > 0, item["output"]
        else:
            assert item["rule"] == "default", item["output"]
            if not item["bit_identical"]:
                want = "drift" if item["mismatched"] > 0 else "within_tolerance"
                assert item["verdict"] == want, item["output"]


def test_report_validates_against_the_published_schema(three_debian) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_json(REPO_ROOT / "reprocheck" / "report" / "schema.json")
    jsonschema.Draft202012Validator(schema).validate(three_debian["report"])


def test_agreement_classes_in_json_and_summary(three_debian) -> None:
    report, stdout = three_debian["report"], three_debian["proc"].stdout
    dirs = {env["name"]: env["outputs_dir"] for env in report["environments"]}
    agreement = {entry["output"]: entry["classes"] for entry in report["agreement"]}
    assert set(agreement) == stored_outputs(dirs["bullseye"])
    for output, classes in agreement.items():
        arrays = {name: stored_array(folder, output) for name, folder in dirs.items()}
        assert {frozenset(c) for c in classes} == recomputed_classes(arrays), output
    assert "agreement classes" in stdout
    patterns = Counter(" | ".join("{" + ", ".join(c) + "}" for c in classes)
                       for classes in agreement.values())  # fmt: skip
    assert len(patterns) > 1  # some outputs split the environments
    for pattern, count in patterns.items():
        assert re.search(rf"\b{count}\s+outputs?:\s+{re.escape(pattern)}", stdout), pattern


# --- 8. JUnit and Markdown from the same run -----------------------------------------------------


def test_junit_failures_are_the_failing_comparisons(three_debian) -> None:
    """One case per output key (fixtures together) and pair; failing where any fixture's
    comparison fails."""
    from reprocheck.report.common import fixtures_of, output_key

    report, root = three_debian["report"], three_debian["root"]
    fixtures = fixtures_of(report)
    assert fixtures  # the example's callable runs once per fixture

    def case_of(c: dict[str, Any]) -> tuple[str, str]:
        return (f"{c['baseline']}->{c['candidate']}", output_key(c["output"], fixtures))

    failing = {case_of(c) for c in report["comparisons"] if c["verdict"] in FAILING}
    suites = ET.parse(root / "j.xml").getroot()
    failed = {(case.get("classname"), case.get("name"))
              for case in suites.iter("testcase") if case.find("failure") is not None}  # fmt: skip
    assert failed == failing
    assert int(suites.get("failures")) == len(failing) > 0
    assert int(suites.get("tests")) == len({case_of(c) for c in report["comparisons"]})
    assert int(suites.get("tests")) < len(report["comparisons"])  # grouped
    assert int(suites.get("errors")) == sum(c["verdict"] == "error" for c in report["comparisons"])


def test_markdown_has_the_headline(three_debian) -> None:
    report, root = three_debian["report"], three_debian["root"]
    lines = (root / "m.md").read_text().splitlines()
    assert lines[0] == "## ❌ reprocheck: DRIFT"
    counts = report["summary"]
    bold = next(line for line in lines if line.startswith("**"))
    assert f"{counts['drift']} drift" in bold and f"{counts['identical']} identical" in bold
    assert "across 3 environments" in bold


# --- 2, 4, 5. baseline, diff of stored runs, history ---------------------------------------------


@pytest.fixture(scope="module")
def two_runs(docker_engine, debian_bases, tmp_path_factory) -> dict[str, Any]:
    """run, baseline save today, run --baseline today, then history: in one project."""
    root = example_project(tmp_path_factory.mktemp("two") / "project")
    envs = ("--env", "bullseye", "--env", "bookworm")
    ok(reprocheck(root, "run", *envs, "--json", "first.json", "-q"), 1)
    saved = ok(reprocheck(root, "baseline", "save", "today"), 0)
    ok(reprocheck(root, "run", *envs, "--baseline", "today", "--json", "second.json", "-q"), 1)
    second = load_json(root / "second.json")
    history = ok(reprocheck(root, "history", "--png", str(root / "trend.png")), 0)
    return {
        "root": root,
        "first": load_json(root / "first.json"),
        "second": second,
        "saved": saved,
        "history": history,
        "second_html": (Path(second["run_dir"]) / "report.html").read_text(),
    }


def test_baseline_saved_today_shows_no_drift(two_runs) -> None:
    report = two_runs["second"]
    assert "baseline today" in two_runs["saved"].stdout
    against = [c for c in report["comparisons"] if c["baseline"].startswith("today/")]
    for env in report["environments"]:
        mine = [c for c in against if c["candidate"] == env["name"]]
        assert {c["baseline"] for c in mine} == {f"today/{env['name']}"}
        outputs = [c["output"] for c in mine]
        assert sorted(outputs) == sorted(stored_outputs(env["outputs_dir"]))  # one per output
    everywhere = [stored_outputs(e["outputs_dir"]) for e in report["environments"]]
    assert len(against) == sum(map(len, everywhere))
    assert {c["verdict"] for c in against} == {"identical"}
    assert any(c["verdict"] == "drift" for c in report["comparisons"])  # bullseye->bookworm


def test_diff_of_two_runs_of_the_same_environments(two_runs) -> None:
    root, first, second = two_runs["root"], two_runs["first"], two_runs["second"]
    ok(reprocheck(root, "diff", first["run_id"], second["run_id"], "--json", "d.json"), 0)
    diff = load_json(root / "d.json")
    assert diff["pairs"] == [[f"{first['run_id']}/bullseye", "bullseye"],
                             [f"{first['run_id']}/bookworm", "bookworm"]]  # fmt: skip
    per_env = len(stored_outputs(first["environments"][0]["outputs_dir"]))
    assert len(diff["comparisons"]) == 2 * per_env
    assert {c["verdict"] for c in diff["comparisons"]} == {"identical"}


def test_history_lists_each_run_and_draws_a_trend(two_runs) -> None:
    pytest.importorskip("matplotlib")  # the trend plot is the `history` extra
    root, first, second = two_runs["root"], two_runs["first"], two_runs["second"]
    stdout = two_runs["history"].stdout
    lines = [line for line in stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert [line.split()[1] for line in lines] == [first["run_id"], second["run_id"]]
    assert all(" worst " in line for line in lines)  # each run on one line
    assert "(max_abs " in lines[0]  # the worst output in its own units
    drift = sum(c["verdict"] == "drift" for c in first["comparisons"])
    assert f"drift {drift}/{len(first['comparisons'])}" in lines[0]
    assert (root / "trend.png").read_bytes().startswith(PNG_SIGNATURE)
    assert f"trend plot: {root / 'trend.png'}" in stdout


def test_html_report_embeds_the_trend(two_runs) -> None:
    found = re.search(r'id="trend".*?(<svg class="trend".*?</svg>)', two_runs["second_html"],
                      re.S)  # fmt: skip
    assert found, "no trend in the second run's report.html"
    assert found.group(1).count("<circle") == 2  # one point per run so far


# --- 3, 4. split runs: merge and diff ------------------------------------------------------------


@pytest.fixture(scope="module")
def split_runs(docker_engine, debian_bases, tmp_path_factory) -> dict[str, Any]:
    root = example_project(tmp_path_factory.mktemp("split") / "project")
    ok(reprocheck(root, "run", "--env", "bullseye", "--out", "A", "-q"), 0)
    ok(reprocheck(root, "run", "--env", "bookworm", "--out", "B", "-q"), 0)
    ok(reprocheck(root, "merge", "A", "B", "--out", "merged", "--json", "m.json"), 1)
    ok(reprocheck(root, "run", "--env", "bullseye", "--env", "bookworm", "--json", "s.json",
                  "-q"), 1)  # fmt: skip
    merged, single = load_json(root / "m.json"), load_json(root / "s.json")
    return {"root": root, "merged": merged, "single": single}


def _comparison_set(report: dict[str, Any]) -> set[tuple[Any, ...]]:
    keys = ("output", "baseline", "candidate", "verdict", "mismatched", "max_abs", "max_ulp")
    return {tuple(c.get(k) for k in keys) for c in report["comparisons"]}


def test_merge_gives_the_report_a_single_run_gives(split_runs) -> None:
    merged, single = split_runs["merged"], split_runs["single"]
    assert [e["name"] for e in merged["environments"]] == ["bullseye", "bookworm"]
    assert merged["pairs"] == single["pairs"] == [["bullseye", "bookworm"]]
    assert len(merged["comparisons"]) == len(single["comparisons"]) > 0
    assert _comparison_set(merged) == _comparison_set(single)
    assert merged["summary"] == single["summary"]
    assert any(c["verdict"] == "drift" for c in merged["comparisons"])


def test_diff_of_two_single_environment_runs(split_runs) -> None:
    root = split_runs["root"]
    ok(reprocheck(root, "diff", str(root / "A"), str(root / "B"), "--json", "d.json"), 1)
    diff = load_json(root / "d.json")
    assert diff["pairs"] == [["A/bullseye", "bookworm"]]
    by_output = {c["output"]: c["verdict"] for c in split_runs["single"]["comparisons"]}
    assert {c["output"]: c["verdict"] for c in diff["comparisons"]} == by_output


# --- 6. noise floor ------------------------------------------------------------------------------

NOISY = """
import numpy as np

def run(path):
    # default_rng() without a seed draws from the OS: the harness's np.random.seed(0) and
    # random.seed(0) do not reach it
    return {"noisy": np.random.default_rng().random(4), "steady": np.arange(4.0)}
"""


def test_noise_floor_separates_nondeterminism_from_drift(docker_engine, debian_bases, tmp_path):
    source = write_project(
        tmp_path / "noise",
        '[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "inputs"\n[run]\nrepeat = 2\n'
        + toml_environments("bookworm", "trixie"),
        {"p.py": NOISY, "inputs/a.bin": "abc"},
    )
    proc = ok(reprocheck(source.parent, "run", "--json", "r.json"), 0)
    report = load_json(source.parent / "r.json")
    noisy = {(n["output"], n["environment"]) for n in report["nondeterministic"]}
    assert noisy == {("a.bin/noisy", "bookworm"), ("a.bin/noisy", "trixie")}
    assert all(n["repeats"] == 2 and as_float(n["max_abs"]) > 0
               for n in report["nondeterministic"])  # fmt: skip
    verdicts = {c["output"]: c["verdict"] for c in report["comparisons"]}
    assert verdicts == {"a.bin/noisy": "nondeterministic", "a.bin/steady": "identical"}
    assert "nondeterministic a.bin/noisy in bookworm" in proc.stdout


# --- 7. explain (issue 5) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explained(two_runs) -> dict[str, Any]:
    """explain on the latest run (bullseye, bookworm) of the two_runs project."""
    root = two_runs["root"]
    glob = "truncated_progressive.jpg/resize/*"
    for name in ("e1.json", "e2.json"):
        ok(reprocheck(root, "explain", "--output", glob, "--json", name), 0)
    svd = "truncated_progressive.jpg/linalg/svd"
    ok(reprocheck(root, "explain", "--output", svd, "--json", "s.json"), 0)
    ok(reprocheck(root, "explain", "--output", "photo_baseline.jpg/libm/*", "--json", "l.json"), 0)
    return {name: load_json(root / f"{name}.json") for name in ("e1", "e2", "s", "l")}


def test_explain_combines_two_libraries_when_each_only_moves_the_output(explained) -> None:
    """The truncated JPEG's SVD drift needs bullseye's libjpeg AND its BLAS: each transplant
    alone changes bookworm's output without matching; the two together make it follow."""
    (item,) = explained["s"]["attributions"]
    causes = {c["factor"]: c for c in item["causes"]}
    assert causes["libblas3 + libjpeg62-turbo"]["confidence"] >= 0.9
    assert "bit-identical" in causes["libblas3 + libjpeg62-turbo"]["evidence"]
    assert causes["libjpeg62-turbo"]["confidence"] == 0.5
    assert causes["libblas3"]["confidence"] == 0.5


def test_explain_attributes_resize_drift_to_libjpeg(explained, two_runs) -> None:
    drifting = {c["output"] for c in two_runs["first"]["comparisons"]
                if c["verdict"] == "drift" and "/resize/" in c["output"]
                and c["output"].startswith("truncated_progressive.jpg/")}  # fmt: skip
    attributions = explained["e1"]["attributions"]
    assert {a["output"] for a in attributions} == drifting != set()
    for item in attributions:
        assert (item["baseline"], item["candidate"]) == ("bullseye", "bookworm")
        package = next(c for c in item["causes"] if c["kind"] == "package")
        assert package["factor"] == "libjpeg62-turbo", item
        assert package["confidence"] >= 0.9
        assert "bit-identical" in package["evidence"]
        assert item["causes"][0]["kind"] == "package"  # ranked first
        assert any(c["kind"] == "stage" and c["factor"] == "decoded" for c in item["causes"])


def test_explain_again_costs_nothing(explained) -> None:
    first, again = explained["e1"], explained["e2"]
    assert again["experiments"] and all(e["cached"] for e in again["experiments"])
    factors = [e["factor"] for e in first["experiments"]]
    assert [e["factor"] for e in again["experiments"]] == factors
    assert again["attributions"] == first["attributions"]


def test_explain_shows_causes_in_the_html_and_keeps_its_trend(explained, two_runs) -> None:
    run_dir = Path(two_runs["second"]["run_dir"])
    last = explained["l"]["attributions"]  # the last explain of the run
    stored = load_json(run_dir / "report.json")["attributions"]
    assert all(item in stored for item in last)  # merged with the earlier explains' ones
    first = explained["e1"]["attributions"]
    assert all(item["output"] in {s["output"] for s in stored} for item in first)
    html = (run_dir / "report.html").read_text()
    section = html.partition('<h2 id="attributions">')[2].partition("<h2")[0]
    assert all(item["output"] in section for item in last)
    assert '<h2 id="trend">' in html  # as the run wrote it


def test_explain_libm_drift_points_at_glibc(explained) -> None:
    """bullseye -> bookworm libm outputs: no Debian package transplant makes them follow;
    glibc moved forward (bullseye's userland under bookworm's loader, libc and libm) or a knob
    (numpy SIMD for numpy's float32 loops) does, or the two together (an output that stacks
    functions of both), and libc6 is then the cause at >= 0.9. No other package is ever
    credited with them."""
    attributions = explained["l"]["attributions"]
    assert attributions
    for item in attributions:
        assert item["output"].startswith("photo_baseline.jpg/libm/")
        causes = item["causes"]
        settled = [c for c in causes if c["kind"] in ("package", "knob") and c["confidence"] >= 0.9]
        packages = [c["factor"] for c in settled if c["kind"] == "package"]
        assert all(p == "libc6" or p.startswith("libc6 + ") for p in packages), item
        assert settled or any(c["factor"] == "libc6" for c in causes), item
    direct = next(a for a in attributions if a["output"] == "photo_baseline.jpg/libm/glibc_direct")
    top = direct["causes"][0] if direct["causes"][0]["kind"] != "stage" else direct["causes"][1]
    assert (top["factor"], top["kind"]) == ("libc6", "package") and top["confidence"] >= 0.9


def test_the_example_report_in_chromium(explained, two_runs, tmp_path) -> None:
    """The example's own report, after explain, in a real browser: the script finishes with
    nothing on the console, drifting images carry heatmaps, the fingerprint diff shows the
    glibc row and the attributions name the transplanted library."""
    from test_html_chromium import _chromium

    page = Path(two_runs["second"]["run_dir"]) / "report.html"
    dom = _chromium(tmp_path, page, "--dump-dom").stdout
    assert 'data-ready="1"' in dom, "the page script did not finish"
    details = dom.partition('<h2 id="details"')[2].partition('<h2 id="fingerprints"')[0]
    assert "data:image/png;base64," in details, "no heatmap for any drifting output"
    fingerprints = dom.partition('<h2 id="fingerprints"')[2].partition("<h2")[0]
    assert re.search(r"<code>glibc</code></td><td>2\.31</td><td>2\.36</td>", fingerprints)
    attributions = dom.partition('<h2 id="attributions"')[2].partition("<h2")[0]
    assert "libjpeg62-turbo" in attributions and "libc6" in attributions
