"""Compose services as environments: checked when the config loads, their environment under
the environment's own env, and built like a Dockerfile folder (tag and labels by a digest
that covers the build args and the Dockerfile's name)."""

from __future__ import annotations

import hashlib
import tarfile
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeEngine

from reprocheck import cli
from reprocheck.config import RunConfig, load_config
from reprocheck.errors import ConfigError
from reprocheck.images import (
    CA_FILE,
    LABEL_COMPOSE,
    LABEL_CONTEXT,
    LABEL_DOCKERFILE,
    BuildRecipe,
    ImageBuilder,
    _context_digest,
    base_images,
    build_recipe,
    project_contexts,
)

COMPOSE = """
services:
  infer:
    build:
      context: ./app
      dockerfile: docker/Dockerfile.infer
      args:
        GREETING: "hello ${WHO:-world}"
    environment:
      - MODE=compose
      - THREADS=4
  short:
    build: ./app
  pinned:
    image: "debian:${SUITE:-bookworm}"
    platform: linux/arm64
    environment: {FLAG: true}
"""
DOCKERFILE = "ARG BASE=debian:bookworm\nFROM ${BASE}\nARG GREETING\nRUN echo $GREETING\n"


@pytest.fixture(autouse=True)
def _no_host_ca(no_host_ca: None) -> None:
    """Builds pick a CA bundle from the environment; make that deterministic."""


def _config(
    make_project, service: str, extra: str = "", compose: str = COMPOSE, **more: str
) -> RunConfig:
    text = f"""
[pipeline]
callable = "p.py:run"

[[environments]]
name = "env"
image = "compose:docker-compose.yml#{service}"
{extra}
"""
    files = {"docker-compose.yml": compose, "app/docker/Dockerfile.infer": DOCKERFILE,
             "app/Dockerfile": "FROM debian:bookworm\n", "app/model.txt": "weights"}  # fmt: skip
    return load_config(make_project(text, files | more))


def _contexts(engine: FakeEngine) -> list[dict[str, bytes]]:
    """The build contexts the engine received, as name -> bytes."""
    seen: list[dict[str, bytes]] = []
    real = engine.build

    def build(request, on_line):
        with tarfile.open(request.context_tar) as tar:
            seen.append({m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()})
        return real(request, on_line)

    engine.build = build  # type: ignore[method-assign]
    return seen


# --- the config ---------------------------------------------------------------------------


def test_environment_goes_under_env(make_project, monkeypatch) -> None:
    config = _config(make_project, "infer", extra='env = { MODE = "mine", OWN = "1" }')
    assert config.environments[0].env == {"MODE": "mine", "THREADS": "4", "OWN": "1"}
    assert config.environments[0].platform is None


def test_service_platform_unless_the_environment_sets_one(make_project) -> None:
    config = _config(make_project, "pinned")
    assert config.environments[0].platform == "linux/arm64"
    assert config.environments[0].env == {"FLAG": "true"}
    config = _config(make_project, "pinned", extra='platform = "linux/amd64"')
    assert config.environments[0].platform == "linux/amd64"


def test_compose_image_is_neither_folder_nor_reference(make_project) -> None:
    config = _config(make_project, "infer")
    env = config.environments[0]
    assert config.dockerfile_folder(env) is None
    service = config.compose_service(env)
    assert service is not None and service.name == "infer"


@pytest.mark.parametrize(
    ("service", "compose", "message"),
    [
        ("nope", COMPOSE, "no service 'nope' (services in it: infer, pinned, short)"),
        ("infer", "services: [\n", "invalid YAML: "),
        ("x", "services:\n  x: {ports: ['80:80']}\n", "service 'x' has neither build nor image"),
        ("x", "services:\n  x: {image: 'Debian:Bookworm'}\n", "is not a valid image reference"),
        ("x", "services:\n  x: {build: ./nowhere}\n", "is not a folder"),
        ("x", "services:\n  x: {image: 'i:${TAG:?give a tag}'}\n", "image: give a tag"),
    ],
)
def test_bad_service_is_a_config_error(make_project, service, compose, message) -> None:
    with pytest.raises(ConfigError) as info:
        _config(make_project, service, compose=compose)
    text = str(info.value)
    assert "field 'environments.0.image': " in text
    assert "docker-compose.yml" in text
    assert message in text
    assert "\n" not in text and info.value.fix


def test_missing_compose_file(make_project, tmp_path) -> None:
    source = make_project(
        '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "e"\n'
        'image = "compose:c.yml#s"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(source)
    assert str(info.value).startswith(f"{source}: field 'environments.0.image': compose file ")
    assert "c.yml does not exist (the path is relative to the config file's folder)" in str(
        info.value
    )


def test_cli_exits_2_without_a_traceback(make_project) -> None:
    source = make_project(
        '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "e"\n'
        'image = "compose:docker-compose.yml#nope"\n',
        {"docker-compose.yml": COMPOSE},
    )
    result = CliRunner().invoke(cli.main, ["run", "--config", str(source)])
    assert result.exit_code == 2, result.output
    assert "no service 'nope'" in result.output
    assert "Traceback" not in result.output


def test_compose_file_changed_after_loading(make_project) -> None:
    config = _config(make_project, "infer")
    (config.root / "docker-compose.yml").write_text("services: {}\n")
    with pytest.raises(ConfigError, match=r"environment 'env': .*no service 'infer'"):
        ImageBuilder(FakeEngine(), config).resolve(config.environments[0])


# --- building -----------------------------------------------------------------------------


def test_build_like_a_folder(make_project, fake_engine) -> None:
    fake_engine.add("debian:bookworm")
    contexts = _contexts(fake_engine)
    config = _config(make_project, "infer")
    image = ImageBuilder(fake_engine, config).resolve(config.environments[0])
    (request,) = fake_engine.builds
    digest = request.labels[LABEL_CONTEXT]
    app = config.root / "app"
    assert request.tag == f"reprocheck/infer:{digest[:12]}"
    assert request.dockerfile == "docker/Dockerfile.infer"
    assert request.buildargs == {"GREETING": "hello world", "REPROCHECK_CA": CA_FILE}
    assert request.labels[LABEL_DOCKERFILE] == str(app / "docker/Dockerfile.infer")
    assert request.labels[LABEL_COMPOSE] == f"compose:{config.root / 'docker-compose.yml'}#infer"
    assert set(contexts[0]) == {"docker/Dockerfile.infer", "Dockerfile", "model.txt", CA_FILE}
    assert image.dockerfile == app / "docker/Dockerfile.infer"
    assert project_contexts(config) == {digest}


def test_build_arg_is_part_of_the_tag(make_project, fake_engine, monkeypatch) -> None:
    fake_engine.add("debian:bookworm")
    config = _config(make_project, "infer")

    def build() -> str:
        ImageBuilder(fake_engine, load_config(config.source)).resolve(config.environments[0])
        return fake_engine.builds[-1].tag

    first = build()
    assert build() == first and len(fake_engine.builds) == 1  # the same args: reused
    monkeypatch.setenv("WHO", "team")
    second = build()
    assert second != first and len(fake_engine.builds) == 2
    assert fake_engine.builds[-1].buildargs["GREETING"] == "hello team"


def test_dockerfile_name_is_part_of_the_tag(make_project) -> None:
    config = _config(make_project, "infer")
    recipe = build_recipe(config, config.environments[0])
    assert recipe is not None
    other = BuildRecipe(context=recipe.context, name="x", dockerfile="Dockerfile",
                        args=recipe.args)  # fmt: skip
    no_args = BuildRecipe(context=recipe.context, name="x", dockerfile=recipe.dockerfile)
    assert len({_context_digest(r, b"") for r in (recipe, other, no_args)}) == 3


def test_a_folders_digest_stays_what_it_was(tmp_path: Path) -> None:
    """Dockerfile folders keep the digest (and so the tag) they had before compose builds."""
    (tmp_path / "sub").mkdir()
    for rel, text in {"Dockerfile": "FROM x\n", "a.txt": "a", "sub/b.txt": "b"}.items():
        (tmp_path / rel).write_text(text)
    expected = hashlib.sha256()
    for rel in ("Dockerfile", "a.txt", "sub/b.txt"):
        expected.update(rel.encode() + b"\0" + (tmp_path / rel).read_bytes() + b"\0")
    expected.update(CA_FILE.encode() + b"\0" + b"pem")
    recipe = BuildRecipe(context=tmp_path, name=tmp_path.name)
    assert _context_digest(recipe, b"pem") == expected.hexdigest()


def test_short_form_and_from_arguments(make_project, fake_engine) -> None:
    fake_engine.add("debian:bookworm")
    config = _config(make_project, "short")
    ImageBuilder(fake_engine, config).resolve(config.environments[0])
    (request,) = fake_engine.builds
    assert request.dockerfile == "Dockerfile"
    assert request.buildargs == {"REPROCHECK_CA": CA_FILE}
    assert request.tag.startswith("reprocheck/short:")


def test_base_from_a_build_arg_is_made_present(make_project, fake_engine) -> None:
    fake_engine.add("debian:trixie")
    compose = COMPOSE.replace('GREETING: "hello ${WHO:-world}"', "BASE: debian:trixie")
    config = _config(make_project, "infer", compose=compose)
    ImageBuilder(fake_engine, config).resolve(config.environments[0])
    assert fake_engine.pulls == []  # debian:trixie was present; debian:bookworm never asked for


@pytest.mark.parametrize(
    ("dockerfile", "args", "expected"),
    [
        ("ARG BASE=debian:bookworm\nFROM ${BASE}\n", {}, ["debian:bookworm"]),
        ("ARG BASE=debian:bookworm\nFROM $BASE\n", {"BASE": "debian:trixie"}, ["debian:trixie"]),
        ('ARG A="debian" B=bookworm\nFROM ${A}:${B}\n', {}, ["debian:bookworm"]),
        ("ARG BASE\nFROM ${BASE}\n", {}, []),  # left to the build, which reports it
        ("FROM debian:bookworm\nARG BASE=x\nFROM ${BASE}\n", {}, ["debian:bookworm"]),
        ("FROM scratch\nARG B=x\nFROM $B\n", {}, []),
    ],
)
def test_base_images_with_arguments(tmp_path: Path, dockerfile, args, expected) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    assert base_images(path, args) == expected


def test_image_only_service(make_project, fake_engine, monkeypatch) -> None:
    fake_engine.add("debian:trixie")
    monkeypatch.setenv("SUITE", "trixie")
    config = _config(make_project, "pinned")
    assert build_recipe(config, config.environments[0]) is None
    image = ImageBuilder(fake_engine, config).resolve(config.environments[0])
    assert image.ref == "debian:trixie" and image.dockerfile is None
    assert fake_engine.builds == []


def test_context_leaves_out_stored_runs_and_dockerignore(make_project, fake_engine) -> None:
    """``context: .`` at the project root: reprocheck's own reports never enter the context
    (every run would otherwise build again), and ``.dockerignore`` applies as in Docker."""
    fake_engine.add("debian:bookworm")
    contexts = _contexts(fake_engine)
    compose = "services:\n  root:\n    build: .\n"
    config = _config(make_project, "root", compose=compose, Dockerfile="FROM debian:bookworm\n")
    root = config.root
    for rel in ("reports/run1/report.json", "baselines/b/run.json", "data/big.bin",
                "data/keep.bin", "src/x.py"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / ".dockerignore").write_text("# comment\ndata\n!data/keep.bin\nDockerfile\n")
    ImageBuilder(fake_engine, config).resolve(config.environments[0])
    sent = set(contexts[0])
    assert {"Dockerfile", "data/keep.bin", "src/x.py", "docker-compose.yml"} <= sent
    assert not {n for n in sent if n.startswith(("reports/", "baselines/", "data/big"))}
    digest = fake_engine.builds[0].labels[LABEL_CONTEXT]
    (root / "reports/run2").mkdir()
    (root / "reports/run2/report.json").write_text("{}")
    (root / "data/big.bin").write_text("changed")
    assert project_contexts(config) == {digest}  # neither change rebuilds


def test_prune_keeps_each_services_newest(make_project, monkeypatch) -> None:
    """Two services built from one Dockerfile with other args are two images, not an old
    and a new build of one."""
    from fakes import image_info

    config = _config(make_project, "infer")
    dockerfile = str(config.root / "app/Dockerfile")
    images = []
    for ref, service, created in (("a1", "a", "1"), ("b1", "b", "2"), ("a2", "a", "3")):
        info = image_info(ref, **{LABEL_DOCKERFILE: dockerfile, LABEL_COMPOSE: service,
                                  "io.reprocheck": "1"})  # fmt: skip
        images.append(type(info)(**{**info.__dict__, "created": created}))

    class Engine:
        removed: typing.ClassVar[list[str]] = []

        def images(self, label: str):
            return [i for i in images if label in i.labels]

        def remove_image(self, ref: str) -> bool:
            self.removed.append(ref)
            return True

    engine = Engine()
    monkeypatch.setattr(cli, "_configured_engine", lambda _path: engine)
    result = CliRunner().invoke(cli.main, ["images", "prune", "--config", str(config.source)])
    assert result.exit_code == 0, result.output
    assert engine.removed == [images[0].id]
