"""Many outputs: wall time, peak memory and report sizes of `reprocheck compare` (and, with
--containers, of a whole `reprocheck run`) at N outputs per environment, three environments,
10% of the arrays moved by one ULP in one of them (the shape of the scale issue).

Every figure is measured in this run, for the current code and, with --against REF, for the
code of git REF (checked out into a temporary worktree and run the same way), and printed
as a ratio. No figure is asserted: this prints, CI runs it small as a smoke test.

    python bench/scale.py --outputs 20000 --against 8b8590b
    python bench/scale.py --outputs 100000 --containers
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVS = ("a", "b", "c")
WIDTH = 64  # float32 values per output array
MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(seconds, peak, proc.returncode, repr(proc.stderr[-300:]))
"""
PIPELINE = """
import os, sys
import numpy as np
n, width = int(os.environ["N"]), int(os.environ["WIDTH"])
values = np.random.default_rng(0).random((n, width), dtype=np.float32)
if os.environ["SHIFT"] == "1":
    moved = np.arange(0, n, 10)
    values[moved, 0] = np.nextafter(values[moved, 0], np.float32(2))
np.savez(os.path.join(sys.argv[1], "preds.npz"), **{f"s{i:07d}": values[i] for i in range(n)})
"""


@dataclass(frozen=True)
class Figures:
    seconds: float
    peak_mb: float
    json_mb: float
    html_mb: float
    exit_code: int


def config_text(image: str, n: int) -> str:
    envs = "".join(
        f'[[environments]]\nname = "{name}"\nimage = "{image}"\n'
        f'env = {{ SHIFT = "{int(name == "c")}", N = "{n}", WIDTH = "{WIDTH}" }}\n'
        for name in ENVS
    )
    return (
        textwrap.dedent("""\
        [pipeline]
        command = ["python3", "p.py", "{outputs}"]
        [fixtures]
        path = "inputs"
        """)
        + envs
    )


def make_project(folder: Path, n: int) -> Path:
    (folder / "inputs").mkdir(parents=True)
    (folder / "inputs" / "x").write_text("x")
    (folder / "p.py").write_text(PIPELINE)
    (folder / "reprocheck.toml").write_text(config_text(str(ROOT / "images/debian-bookworm"), n))
    return folder


def make_run(folder: Path, n: int) -> str:
    """A stored run written as the runner writes one, without containers."""
    run_id = "synthetic"
    run_dir = folder / "reports" / run_id
    environments = []
    for env in ENVS:
        out, meta = (
            run_dir / "environments" / env / "outputs",
            run_dir / "environments" / env / "meta",
        )
        out.mkdir(parents=True)
        meta.mkdir(parents=True)
        subprocess.run([sys.executable, "-c", PIPELINE, str(out)], check=True,
                       env={**os.environ, "N": str(n), "WIDTH": str(WIDTH),
                            "SHIFT": str(int(env == "c"))})  # fmt: skip
        (meta / "fingerprint.json").write_text("{}")
        environments.append({"name": env, "image": "x", "image_ref": "x", "image_id": "sha256:x",
                             "status": "ok", "error": None, "seconds": 1.0, "repeat": 1,
                             "outputs_dir": f"environments/{env}/outputs", "fixtures": [],
                             "meta_dir": f"environments/{env}/meta"})  # fmt: skip
    manifest = {"manifest_version": 1, "run_id": run_id, "started": "2026-01-01T00:00:00+00:00",
                "config_source": str(folder / "reprocheck.toml"), "environments": environments,
                "repeats": []}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(manifest))
    return run_id


def measure(project: Path, code: Path, args: list[str]) -> Figures:
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, "-c", MEASURE, sys.executable, "-m", "reprocheck.cli", *args]
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip
    seconds, peak_kb, code_, _err = proc.stdout.split(maxsplit=3)
    latest = max((project / "reports").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    html = latest.with_name("report.html")
    return Figures(
        seconds=float(seconds), peak_mb=int(peak_kb) / 1024,
        json_mb=latest.stat().st_size / 1e6,
        html_mb=html.stat().st_size / 1e6 if html.exists() else 0.0, exit_code=int(code_),
    )  # fmt: skip


def browser_seconds(page: Path) -> float | None:
    """Seconds headless Chromium takes to load, lay out and run the page (None without a
    browser): --dump-dom returns once the load event fired and scripts ran."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None or not page.exists():
        return None
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        seconds = time.perf_counter() - started
    return seconds if 'data-ready="1"' in done.stdout else None


def _drop_stores(project: Path) -> None:
    for path in (project / "reports").glob("*/environments/*/outputs.arrow"):
        path.unlink()


def checkout(ref: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), ref],
                   check=True)  # fmt: skip
    return into


def show(label: str, figures: Figures, n: int, pairs: int) -> None:
    per_output = figures.seconds / (n * pairs) * 1e6
    print(f"  {label:18} {figures.seconds:8.2f} s  {per_output:7.1f} us/comparison  "
          f"peak {figures.peak_mb:7.0f} MB  report.json {figures.json_mb:7.1f} MB  "
          f"report.html {figures.html_mb:6.1f} MB  exit {figures.exit_code}")  # fmt: skip


def ratio(name: str, now: float, then: float) -> str:
    return f"{name} {then / now:.2f}x" if now > 0 else f"{name} -"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=20000, help="outputs per environment")
    parser.add_argument("--against", default=None, help="git ref of the code to compare with")
    parser.add_argument("--containers", action="store_true",
                        help="also time `reprocheck run` on the bookworm image")  # fmt: skip
    args = parser.parse_args()
    n, pairs = args.outputs, len(ENVS) - 1
    with tempfile.TemporaryDirectory(prefix="reprocheck-scale-") as tmp:
        folder = Path(tmp)
        project = make_project(folder / "project", n)
        run_id = make_run(project, n)
        paths = {"current": ROOT}
        if args.against:
            paths[args.against] = checkout(args.against, folder / "against")
        print(f"reprocheck compare: {n:,} outputs x {len(ENVS)} environments, {pairs} pairs")
        results = {}
        pages: dict[str, str] = {}
        for label, code in paths.items():
            _drop_stores(project)
            # The first compare of a run without output stores builds them (the runner
            # writes them right after each container); the second reads them.
            results[label + " (first)"] = measure(project, code, ["compare", "--run", run_id])
            results[label] = measure(project, code, ["compare", "--run", run_id])
            page = project / "reports" / run_id / "report.html"
            opened = browser_seconds(page)
            shown = "-" if opened is None else f"{opened:.2f} s"
            pages[label] = f"{label}: {page.stat().st_size / 1e6:.1f} MB, opens in {shown}"
        for label, figures in results.items():
            show(label, figures, n, pairs)
        empty = folder / "empty.html"
        empty.write_text('<html><body data-ready="1"></body></html>')
        floor = browser_seconds(empty)
        start = "-" if floor is None else f"{floor:.2f} s"
        print(
            "  report.html in headless Chromium (browser start included): "
            + "; ".join(pages.values())
            + f"; an empty page, the same way (the browser's own start): {start}"
        )
        if args.against:
            now, then = results["current (first)"], results[args.against + " (first)"]
            print("  speed-up and savings against", args.against + ":",
                  ratio("time", now.seconds, then.seconds), ratio("memory", now.peak_mb,
                  then.peak_mb), ratio("report.json", now.json_mb, then.json_mb))  # fmt: skip
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(paths[args.against])], check=False)  # fmt: skip
        if args.containers:
            print(f"reprocheck run: {n:,} outputs x {len(ENVS)} environments (images warm)")
            shutil.rmtree(project / "reports")
            figures = measure(project, ROOT, ["run", "-q", "--no-cache"])
            show("current", figures, n, pairs)
            report = json.loads(max((project / "reports").glob("*/report.json"),
                                    key=lambda p: p.stat().st_mtime).read_text())  # fmt: skip
            containers = [float(env["seconds"]) for env in report["environments"]]
            at_once = min(len(containers), os.cpu_count() or 1)  # the runner's default -j
            print(f"  containers (the pipeline itself, {len(containers)} of them, {at_once} at "
                  f"a time on {os.cpu_count()} cores): {', '.join(f'{s:.1f}' for s in containers)}"
                  f" s; the run took {figures.seconds - max(containers):.1f} s more than the "
                  f"slowest")  # fmt: skip


if __name__ == "__main__":
    main()
