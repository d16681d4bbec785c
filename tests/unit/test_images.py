"""images: Dockerfile parsing, Debian references, context digests and ImageBuilder decisions."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from fakes import FakeEngine, image_info

from reprocheck import images
from reprocheck import images as images_module
from reprocheck.config import load_config
from reprocheck.errors import ConfigError, ImageBuildError
from reprocheck.images import (
    CA_FILE,
    LABEL_CONTEXT,
    LABEL_DOCKERFILE,
    ImageBuilder,
    base_images,
    base_tag,
    debian_arch,
    debian_suite,
)


@pytest.fixture(autouse=True)
def _no_host_ca(no_host_ca: None) -> None:
    """Every test here starts without a host CA bundle in the environment."""


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("FROM debian:bookworm\nRUN true\n", ["debian:bookworm"]),
        ("# FROM commented:out\nfrom debian:trixie\n", ["debian:trixie"]),
        (
            "FROM --platform=$BUILDPLATFORM debian:bookworm AS build\n"
            "RUN make\n"
            "FROM build AS test\n"
            "FROM python:3.11-slim as runtime\n"
            "COPY --from=build /x /x\n",
            ["debian:bookworm", "python:3.11-slim"],
        ),
        ("FROM scratch\nADD rootfs.tar /\n", []),
        ("FROM debian:bullseye AS a\nFROM debian:bullseye AS b\n", ["debian:bullseye"] * 2),
        ("FROM --platform=linux/arm64 debian:bookworm\n", ["debian:bookworm"]),
    ],
    ids=["simple", "lowercase", "multi-stage", "scratch", "same-base-twice", "platform"],
)
def test_base_images(tmp_path: Path, dockerfile: str, expected: list[str]) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    assert base_images(path) == expected


def test_base_images_of_the_repo_images() -> None:
    repo = Path(__file__).resolve().parents[2] / "images"
    for suite in ("bullseye", "bookworm", "trixie"):
        assert base_images(repo / f"debian-{suite}" / "Dockerfile") == [f"debian:{suite}"]


@pytest.mark.parametrize(
    ("ref", "suite"),
    [
        ("debian:bookworm", "bookworm"),
        ("debian:12", "bookworm"),
        ("debian:11", "bullseye"),
        ("docker.io/library/debian:trixie", "trixie"),
        ("library/debian:unstable", "sid"),
        ("debian:buster", None),  # gone from the archive
        ("debian:bookworm-slim", None),
        ("debian", None),
        ("ubuntu:22.04", None),
        ("myregistry.example/debian:bookworm", None),
    ],
)
def test_debian_suite(ref: str, suite: str | None) -> None:
    assert debian_suite(ref) == suite


def test_foreign_architecture_bases_get_their_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "native_arch", lambda: "amd64")
    assert debian_suite("reprocheck/debian-arm64:bookworm") == "bookworm"
    assert debian_arch("reprocheck/debian-arm64:bookworm") == "arm64"
    assert debian_arch("debian:bookworm") == "amd64"
    assert debian_arch("debian:bookworm", "linux/arm64") == "arm64"
    assert base_tag("bookworm", "amd64") == "debian:bookworm"
    assert base_tag("trixie", "arm64") == "reprocheck/debian-arm64:trixie"


def test_foreign_architecture_needs_a_qemu_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "native_arch", lambda: "amd64")
    images_module._check_emulation("amd64")  # native: nothing to check
    with pytest.raises(ImageBuildError, match="unknown Debian architecture"):
        images_module._check_emulation("vax")
    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda p: False if "binfmt" in str(p) else real_is_file(p))
    with pytest.raises(ImageBuildError, match="qemu-user-static"):
        images_module._check_emulation("arm64")


# --- ImageBuilder with a fake engine --------------------------------------------------------


def _project(make_project, image: str, extra: str = "", dockerfile: str | None = None):
    files = {"images/env/Dockerfile": dockerfile} if dockerfile is not None else {}
    text = f"""
[pipeline]
callable = "p.py:run"
{extra}
[[environments]]
name = "env"
image = "{image}"
"""
    config = load_config(make_project(text, files))
    return config, config.environments[0]


def test_present_reference_is_used_as_is(make_project, fake_engine: FakeEngine) -> None:
    info = fake_engine.add("myorg/tool:1.0", "sha256:" + "a" * 64)
    config, env = _project(make_project, "myorg/tool:1.0")
    image = ImageBuilder(fake_engine, config).resolve(env)
    assert image.image_id == info.id
    assert image.dockerfile is None
    assert fake_engine.pulls == []
    assert fake_engine.builds == []


def test_missing_reference_is_pulled(make_project, fake_engine: FakeEngine) -> None:
    fake_engine.pullable["myorg/tool:1.0"] = info = image_info("myorg/tool:1.0")
    config, env = _project(make_project, "myorg/tool:1.0")
    image = ImageBuilder(fake_engine, config).resolve(env)
    assert fake_engine.pulls == ["myorg/tool:1.0"]
    assert image.image_id == info.id


def test_non_debian_base_that_cannot_be_pulled(make_project, fake_engine, monkeypatch) -> None:
    called: list[str] = []
    monkeypatch.setattr(images, "bootstrap_debian", lambda _e, ref, **_k: called.append(ref))
    config, env = _project(make_project, "images/env", dockerfile="FROM alpine:3.20\n")
    with pytest.raises(ImageBuildError) as info:
        ImageBuilder(fake_engine, config).resolve(env)
    assert "alpine:3.20" in str(info.value)
    assert "cannot be pulled" in str(info.value)
    assert fake_engine.pulls == ["alpine:3.20"]
    assert called == []
    assert fake_engine.builds == []


def test_missing_debian_base_is_bootstrapped_then_built(
    make_project, fake_engine: FakeEngine, monkeypatch
) -> None:
    called: list[tuple[str, str | None]] = []

    def bootstrap(engine, ref, *, mirror, platform, progress):
        called.append((ref, mirror))
        return engine.add(ref)

    monkeypatch.setattr(images, "bootstrap_debian", bootstrap)
    config, env = _project(
        make_project,
        "images/env",
        extra='[images]\nmirror = "http://mirror.example/debian"\n',
        dockerfile="FROM debian:bookworm\nRUN true\n",
    )
    image = ImageBuilder(fake_engine, config).resolve(env)
    assert fake_engine.pulls == ["debian:bookworm"]  # a pull is tried first
    assert called == [("debian:bookworm", "http://mirror.example/debian")]
    (request,) = fake_engine.builds
    assert image.image_id == fake_engine.present[request.tag].id
    assert image.dockerfile == config.root / "images/env/Dockerfile"
    assert request.labels[LABEL_DOCKERFILE] == str(config.root / "images/env/Dockerfile")


def test_present_base_is_neither_pulled_nor_bootstrapped(make_project, fake_engine, monkeypatch):
    monkeypatch.setattr(images, "bootstrap_debian", _must_not_bootstrap)
    fake_engine.add("debian:bookworm")
    config, env = _project(make_project, "images/env", dockerfile="FROM debian:bookworm\n")
    ImageBuilder(fake_engine, config).resolve(env)
    assert fake_engine.pulls == []
    assert len(fake_engine.builds) == 1


def test_bootstrap_never(make_project, fake_engine, monkeypatch) -> None:
    monkeypatch.setattr(images, "bootstrap_debian", _must_not_bootstrap)
    config, env = _project(
        make_project, "images/env", extra='[images]\nbootstrap = "never"\n',
        dockerfile="FROM debian:bookworm\n",
    )  # fmt: skip
    with pytest.raises(ImageBuildError, match="debian:bookworm"):
        ImageBuilder(fake_engine, config).resolve(env)


def _must_not_bootstrap(*_args, **_kwargs):
    raise AssertionError("bootstrap_debian must not be called")


def test_built_image_is_reused_by_content_digest(make_project, fake_engine) -> None:
    fake_engine.add("debian:bookworm")
    config, env = _project(make_project, "images/env", dockerfile="FROM debian:bookworm\n")
    first = ImageBuilder(fake_engine, config).resolve(env)
    second = ImageBuilder(fake_engine, config).resolve(env)
    assert first.image_id == second.image_id
    assert len(fake_engine.builds) == 1


def test_build_failure_names_dockerfile_and_environment(make_project, fake_engine) -> None:
    fake_engine.add("debian:bookworm")
    fake_engine.build_error = ImageBuildError("Step 2/2 : RUN false failed: exit 1")
    config, env = _project(make_project, "images/env", dockerfile="FROM debian:bookworm\n")
    with pytest.raises(ImageBuildError) as info:
        ImageBuilder(fake_engine, config).resolve(env)
    message = str(info.value)
    assert str(config.root / "images/env/Dockerfile") in message
    assert "environment 'env'" in message
    assert "Step 2/2 : RUN false failed" in message


def test_folder_without_dockerfile(make_project, fake_engine) -> None:
    config, env = _project(make_project, "images/env", dockerfile=None)
    (config.root / "images/env").mkdir(parents=True)
    with pytest.raises(ConfigError, match="has no Dockerfile"):
        ImageBuilder(fake_engine, config).resolve(env)


# --- the build context and its digest -------------------------------------------------------


def _build_once(make_project, fake_engine: FakeEngine, extra: str = ""):
    """Resolve the environment and return the build request (tag, labels, context)."""
    fake_engine.add("debian:bookworm")
    config, env = _project(make_project, "images/env", extra=extra,
                           dockerfile="FROM debian:bookworm\nCOPY data.txt /\n")  # fmt: skip
    folder = config.root / "images/env"
    if not (folder / "data.txt").exists():
        (folder / "data.txt").write_text("one")
    contexts: list[dict[str, bytes]] = []
    real_build = fake_engine.build

    def build(request, on_line):
        with tarfile.open(request.context_tar) as tar:
            contexts.append({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
        return real_build(request, on_line)

    fake_engine.build = build  # type: ignore[method-assign]
    fake_engine.present = {k: v for k, v in fake_engine.present.items() if k == "debian:bookworm"}
    ImageBuilder(fake_engine, config).resolve(env)
    fake_engine.build = real_build  # type: ignore[method-assign]
    request = fake_engine.builds[-1]
    return request.labels[LABEL_CONTEXT], request.tag, contexts[-1], folder


def test_context_digest_is_stable(make_project, fake_engine) -> None:
    first, tag, context, _ = _build_once(make_project, fake_engine)
    second, _, _, _ = _build_once(make_project, fake_engine)
    assert first == second
    assert tag == f"reprocheck/env:{first[:12]}"
    assert set(context) == {"Dockerfile", "data.txt", CA_FILE}
    assert context[CA_FILE] == b""  # always present, empty without a bundle


def test_context_digest_follows_file_content(make_project, fake_engine) -> None:
    first, _, _, folder = _build_once(make_project, fake_engine)
    (folder / "data.txt").write_text("two")
    second, _, context, _ = _build_once(make_project, fake_engine)
    assert first != second
    assert context["data.txt"] == b"two"


def test_context_digest_follows_added_file(make_project, fake_engine) -> None:
    first, _, _, folder = _build_once(make_project, fake_engine)
    (folder / "more.txt").write_text("")
    second, _, context, _ = _build_once(make_project, fake_engine)
    assert first != second
    assert "more.txt" in context


def test_context_digest_follows_ca_bundle(make_project, fake_engine, tmp_path, monkeypatch):
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE----- one")
    monkeypatch.setenv("REPROCHECK_CA_BUNDLE", str(bundle))
    first, _, context, _ = _build_once(make_project, fake_engine)
    assert context[CA_FILE] == bundle.read_bytes()
    bundle.write_text("-----BEGIN CERTIFICATE----- two")
    second, _, _, _ = _build_once(make_project, fake_engine)
    monkeypatch.delenv("REPROCHECK_CA_BUNDLE")
    without, _, _, _ = _build_once(make_project, fake_engine)
    assert len({first, second, without}) == 3


def test_configured_ca_bundle_relative_to_config(make_project, fake_engine) -> None:
    extra = '[images]\nca_bundle = "certs/ca.crt"\n'
    config, _ = _project(make_project, "images/env", extra=extra, dockerfile="FROM x\n")
    (config.root / "certs").mkdir()
    (config.root / "certs/ca.crt").write_text("pem")
    _, _, context, _ = _build_once(make_project, fake_engine, extra=extra)
    assert context[CA_FILE] == b"pem"


def test_configured_ca_bundle_that_is_missing(make_project, fake_engine) -> None:
    config, _ = _project(make_project, "debian:bookworm",
                           extra='[images]\nca_bundle = "nope.crt"\n')  # fmt: skip
    with pytest.raises(ConfigError, match=r"nope\.crt"):
        ImageBuilder(fake_engine, config)


def test_rebuild_builds_once_more_without_the_layer_cache(make_project, fake_engine) -> None:
    """run --rebuild: a long-lived runner's image is built again (apt and pip resolve
    anew), once per Dockerfile however many environments use it."""
    fake_engine.add("debian:bookworm")
    config, env = _project(make_project, "images/env", dockerfile="FROM debian:bookworm\n")
    first = ImageBuilder(fake_engine, config).resolve(env)
    assert len(fake_engine.builds) == 1 and not fake_engine.builds[0].nocache
    ImageBuilder(fake_engine, config).resolve(env)
    assert len(fake_engine.builds) == 1  # cached: same context, same image
    builder = ImageBuilder(fake_engine, config, rebuild=True)
    again = builder.resolve(env)
    builder.resolve(env)
    assert len(fake_engine.builds) == 2 and fake_engine.builds[1].nocache
    assert again.image_id != first.image_id
