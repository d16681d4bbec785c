"""`reprocheck run --refresh` on the real engine: the image is built again without the layer
cache, and what changed in it since the environment's last run is recorded and reported.

The image's last layer installs a Python distribution whose version is the build's time, so
every uncached build "resolves" to a new version, as a moving apt or pip index would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import write_project
from test_cli_run import reprocheck

from reprocheck.config import load_config
from reprocheck.images import ImageBuilder

pytestmark = pytest.mark.docker

MOVING = """FROM {base}
RUN d=$(python3 -c 'import sys; print(sys.path[-1])') \\
 && v=1.$(date +%s%N) \\
 && m="$d/moving-$v.dist-info" && mkdir -p "$m" \\
 && printf 'Metadata-Version: 2.1\\nName: moving\\nVersion: %s\\n' "$v" > "$m/METADATA"
"""
PIPELINE = "def run(path):\n    return {'n': len(open(path).read())}\n"


def _version(run_dir: Path) -> str:
    fingerprint = json.loads((run_dir / "environments/moving/meta/fingerprint.json").read_text())
    return str(fingerprint["packages"]["pip"]["moving"])


def test_refresh_records_what_changed(docker_engine, debian_bases, tmp_path) -> None:
    # The example's bookworm image (python3 and numpy for the harness), built or reused.
    images = Path(__file__).parents[2] / "images"
    example = write_project(tmp_path / "example", '[pipeline]\ncallable = "p.py:run"\n'
                            f'[[environments]]\nname = "b"\nimage = "{images}/debian-bookworm"\n',
                            {"p.py": PIPELINE})  # fmt: skip
    config = load_config(example)
    base = ImageBuilder(docker_engine, config).resolve(config.environments[0]).ref
    source = write_project(
        tmp_path / "project",
        '[pipeline]\ncallable = "p.py:run"\n[fixtures]\npath = "in"\n'
        '[[environments]]\nname = "moving"\nimage = "images/moving"\n',
        {"p.py": PIPELINE, "in/a.txt": "abc", "images/moving/Dockerfile": MOVING.format(base=base)},
    )
    project = source.parent
    first = reprocheck(project, "run", "--out", "reports/one")
    assert first.returncode == 0, first.stderr
    again = reprocheck(project, "run", "--refresh", "--out", "reports/two")
    assert again.returncode == 0, again.stderr
    before, after = _version(project / "reports/one"), _version(project / "reports/two")
    assert before != after  # built again without the layer cache
    line = f"moving: image changed since run one: 1 package(s) (moving {before} -> {after})"
    assert line in again.stdout.replace("\n", " ")
    manifest = json.loads((project / "reports/two/run.json").read_text())
    change = manifest["environments"][0]["image_change"]
    assert change["previous_run"] == "one"
    assert change["packages"] == [{"package": "moving", "before": before, "after": after}]
    assert line in (project / "reports/two/report.md").read_text()
    report = json.loads((project / "reports/two/report.json").read_text())
    assert report["environments"][0]["image_change"]["packages"][0]["after"] == after
    # Without --refresh: the image built by the refresh is reused, nothing recorded.
    plain = reprocheck(project, "run", "--out", "reports/three")
    assert plain.returncode == 0, plain.stderr
    assert _version(project / "reports/three") == after
    assert "image changed" not in plain.stdout
    third = json.loads((project / "reports/three/run.json").read_text())
    assert third["environments"][0]["image_change"] is None
