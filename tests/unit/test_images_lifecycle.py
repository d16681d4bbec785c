"""images list shows this project's images; images prune removes explain's hybrids and the
older builds of each of the project's Dockerfiles (engine faked at its boundary; the real
engine's remove_image is exercised by the e2e tier's prune of hybrids)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from reprocheck import cli
from reprocheck.engine import ImageInfo
from reprocheck.images import LABEL_DOCKERFILE, LABEL_HYBRID

CONFIG = '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\nimage = "images/a"\n'


class FakeEngine:
    name = "fake"

    def __init__(self, images: list[ImageInfo]) -> None:
        self._images = images
        self.removed: list[str] = []

    def images(self, label: str) -> list[ImageInfo]:
        return [i for i in self._images if label in i.labels or label == "io.reprocheck"]

    def remove_image(self, ref: str) -> bool:
        self.removed.append(ref)
        return True


def _info(ref: str, created: str, dockerfile: Path, **labels: str) -> ImageInfo:
    return ImageInfo(ref=ref, id=f"sha256:{ref}", created=created, size=10**6, tags=(ref,),
                     labels={LABEL_DOCKERFILE: str(dockerfile), **labels})  # fmt: skip


def test_list_and_prune_keep_to_the_project(make_project, tmp_path, monkeypatch) -> None:
    config = make_project(CONFIG)
    mine = config.parent / "images" / "a" / "Dockerfile"
    mine.parent.mkdir(parents=True)
    mine.write_text("FROM debian:bookworm\n")
    other = tmp_path / "elsewhere" / "Dockerfile"
    engine = FakeEngine([
        _info("old", "2026-01-01", mine), _info("new", "2026-02-01", mine),
        _info("theirs-old", "2026-01-01", other), _info("theirs", "2026-02-01", other),
        _info("hybrid", "2026-03-01", mine, **{LABEL_HYBRID: "libm6"}),
    ])  # fmt: skip
    monkeypatch.setattr(cli, "_configured_engine", lambda _path: engine)
    runner = CliRunner()
    listed = runner.invoke(cli.main, ["images", "list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "new" in listed.output and "theirs" not in listed.output
    assert "hybrid" not in listed.output
    everything = runner.invoke(cli.main, ["images", "list", "--all", "--config", str(config)])
    assert "theirs" in everything.output and "hybrid" in everything.output
    pruned = runner.invoke(cli.main, ["images", "prune", "--config", str(config)])
    assert pruned.exit_code == 0, pruned.output
    assert sorted(engine.removed) == ["sha256:hybrid", "sha256:old"]
    assert "removed 2 of 2 image(s)" in pruned.output


def test_list_shows_an_identical_context_built_elsewhere(make_project, tmp_path, monkeypatch):
    """Another project with the same Dockerfile built the image this project uses (same
    context digest, same tag): it is listed here too, by its context label."""
    from reprocheck.config import load_config
    from reprocheck.images import LABEL_CONTEXT, BuildRecipe, _context_tar, ca_bundle

    config = make_project(CONFIG)
    mine = config.parent / "images" / "a" / "Dockerfile"
    mine.parent.mkdir(parents=True)
    mine.write_text("FROM debian:bookworm\n")
    loaded = load_config(config)
    (digest,) = cli.project_contexts(loaded)
    recipe = BuildRecipe(context=mine.parent, name="a")
    with _context_tar(recipe, ca_bundle(loaded)) as (_tar, built):
        assert built == digest  # what a build of the folder is tagged and labelled with
    other = tmp_path / "elsewhere" / "Dockerfile"
    shared = _info("shared", "2026-01-01", other, **{LABEL_CONTEXT: digest})
    theirs = _info("theirs", "2026-01-01", other, **{LABEL_CONTEXT: "f" * 64})
    engine = FakeEngine([shared, theirs])
    monkeypatch.setattr(cli, "_configured_engine", lambda _path: engine)
    listed = CliRunner().invoke(cli.main, ["images", "list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "shared" in listed.output and "theirs" not in listed.output
