"""compose: a compose file -> the service an environment names (build, image, environment,
platform), compose's interpolation, and a one-line error for every bad input."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reprocheck.compose import ComposeService, is_compose, load_service
from reprocheck.errors import ConfigError

IMAGE = "compose:docker-compose.yml#svc"


def _service(root: Path, service: Any, environ: dict[str, str] | None = None,
             files: dict[str, str] | None = None) -> ComposeService:  # fmt: skip
    """Write a compose file with ``service`` as ``svc`` (and ``files``) and read it back."""
    _write(root, {"services": {"svc": service}}, files)
    return load_service(root, IMAGE, environ or {})


def _write(root: Path, data: Any, files: dict[str, str] | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in ({"app/Dockerfile": "FROM debian:bookworm\n"} | (files or {})).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    (root / "docker-compose.yml").write_text(text)


def _error(root: Path, service: Any, environ: dict[str, str] | None = None,
           files: dict[str, str] | None = None) -> ConfigError:  # fmt: skip
    with pytest.raises(ConfigError) as info:
        _service(root, service, environ, files)
    _one_line_with_fix(info.value)
    return info.value


def _one_line_with_fix(error: ConfigError) -> None:
    assert "\n" not in str(error)
    assert error.fix


# --- the service's build ----------------------------------------------------------------


def test_build_short_form(tmp_path: Path) -> None:
    service = _service(tmp_path, {"build": "./app"})
    assert service.build is not None
    assert service.build.context == (tmp_path / "app").resolve()
    assert service.build.dockerfile == "Dockerfile"
    assert service.build.args == {}
    assert service.image is None and service.environment == {} and service.platform is None
    assert service.file == tmp_path / "docker-compose.yml"
    assert service.source == f"compose:{tmp_path / 'docker-compose.yml'}#svc"


def test_build_mapping_with_dockerfile_and_args(tmp_path: Path) -> None:
    files = {"app/docker/Dockerfile.gpu": "FROM debian:bookworm\n"}
    build = {"context": "app", "dockerfile": "docker/Dockerfile.gpu",
             "args": {"A": "1", "B": 2, "C": True, "D": 1.5, "E": None, "F": None}}  # fmt: skip
    service = _service(tmp_path, {"build": build}, {"E": "from-env"}, files)
    assert service.build is not None
    assert service.build.dockerfile == "docker/Dockerfile.gpu"
    # a value-less arg comes from the environment; one unset there is left to the Dockerfile
    assert service.build.args == {"A": "1", "B": "2", "C": "true", "D": "1.5", "E": "from-env"}


def test_build_args_list_form(tmp_path: Path) -> None:
    args = ["A=1", "B=x=y", "C=", "D", "E"]
    service = _service(tmp_path, {"build": {"context": "app", "args": args}}, {"D": "d"})
    assert service.build is not None
    assert service.build.args == {"A": "1", "B": "x=y", "C": "", "D": "d"}


def test_build_context_defaults_to_the_compose_files_folder(tmp_path: Path) -> None:
    files = {"Dockerfile": "FROM debian:bookworm\n"}
    service = _service(tmp_path / "deploy", {"build": {"args": {"A": "1"}}}, files=files)
    assert service.build is not None
    assert service.build.context == (tmp_path / "deploy").resolve()


def test_build_context_is_relative_to_the_compose_file(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text("FROM x\n")
    _write(tmp_path / "deploy", {"services": {"svc": {"build": "../app"}}})
    service = load_service(tmp_path, "compose:deploy/docker-compose.yml#svc", {})
    assert service.build is not None
    assert service.build.context == (tmp_path / "app").resolve()


def test_build_and_image_keeps_both(tmp_path: Path) -> None:
    service = _service(tmp_path, {"build": "app", "image": "org/app:${TAG:-dev}"})
    assert service.build is not None
    assert service.image == "org/app:dev"


def test_image_only(tmp_path: Path) -> None:
    service = _service(tmp_path, {"image": "debian:${SUITE}", "platform": "linux/arm64"},
                       {"SUITE": "trixie"})  # fmt: skip
    assert service.build is None
    assert service.image == "debian:trixie"
    assert service.platform == "linux/arm64"


def test_run_time_keys_are_ignored(tmp_path: Path) -> None:
    service = {"build": "app", "command": ["x"], "volumes": ["./a:/a"], "ports": ["80:80"],
               "user": "root", "deploy": {"resources": {}}, "x-custom": 1}  # fmt: skip
    assert _service(tmp_path, service).build is not None


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = """
x-common: &common
  environment: {SHARED: "yes"}
services:
  svc:
    <<: *common
    build: app
"""
    _write(tmp_path, text)
    assert load_service(tmp_path, IMAGE, {}).environment == {"SHARED": "yes"}


# --- environment --------------------------------------------------------------------------


def test_environment_mapping(tmp_path: Path) -> None:
    environment = {"A": "x", "N": 3, "F": 0.5, "T": True, "OFF": False, "FROM_ENV": None,
                   "UNSET": None, "EMPTY": ""}  # fmt: skip
    service = _service(tmp_path, {"build": "app", "environment": environment},
                       {"FROM_ENV": "host"})  # fmt: skip
    assert service.environment == {"A": "x", "N": "3", "F": "0.5", "T": "true", "OFF": "false",
                                   "FROM_ENV": "host", "EMPTY": ""}  # fmt: skip


def test_environment_list(tmp_path: Path) -> None:
    environment = ["A=x", "B=${V}-$V", "C", "D", "E=", "F=a=b"]
    service = _service(tmp_path, {"build": "app", "environment": environment},
                       {"V": "v", "C": "host"})  # fmt: skip
    assert service.environment == {"A": "x", "B": "v-v", "C": "host", "E": "", "F": "a=b"}


# --- interpolation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "environ", "expected"),
    [
        ("plain", {}, "plain"),
        ("$A", {"A": "x"}, "x"),
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post/$A.$A_", {"A": "x", "A_": "y"}, "pre-x-post/x.y"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A-d}", {}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:+r}", {"A": "x"}, "r"),
        ("${A:+r}", {"A": ""}, ""),
        ("${A:+r}", {}, ""),
        ("${A+r}", {"A": ""}, "r"),
        ("${A+r}", {}, ""),
        ("${A:?must}", {"A": "x"}, "x"),
        ("${A?must}", {"A": ""}, ""),
        ("${A:-${B:-z}}", {}, "z"),
        ("${A:-${B}}", {"B": "b"}, "b"),
        ("${A:-a{b}c}", {}, "a{bc}"),  # the first '}' after the last '${' closes, as in compose
        ("$${A}", {"A": "x"}, "${A}"),
        ("$$A $$", {}, "$A $"),
        ("${A:-}", {}, ""),
        ("${A:-x y}", {}, "x y"),
        ("${_a1}", {"_a1": "u"}, "u"),
        ("${A}", {}, ""),  # unset: empty, with a warning
    ],
)
def test_interpolation(tmp_path: Path, template: str, environ: dict[str, str], expected: str):
    service = _service(tmp_path, {"image": "i", "environment": {"V": template}}, environ)
    assert service.environment["V"] == expected


def test_unset_variable_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reprocheck.compose"):
        service = _service(tmp_path, {"image": "debian:bookworm${SUFFIX}"})
    assert service.image == "debian:bookworm"
    assert "$SUFFIX is not set" in caplog.text


@pytest.mark.parametrize(
    ("template", "environ", "message"),
    [
        ("${A:?set A first}", {}, "set A first"),
        ("${A:?set A first}", {"A": ""}, "set A first"),
        ("${A?}", {}, "A is required"),
        ("${A:?$B}", {"B": "from B"}, "from B"),
    ],
)
def test_required_variable(tmp_path: Path, template: str, environ: dict[str, str], message: str):
    error = _error(tmp_path, {"build": "app", "environment": {"V": template}}, environ)
    assert f"service 'svc': environment.V: {message}" in error.message
    assert "set A in the environment" in error.fix


@pytest.mark.parametrize("template", ["$", "a$", "${", "${A", "${}", "${1A}", "${A*b}", "$1",
                                      "$ x", "${A:-${B}", "${A B}", "${-A}"])  # fmt: skip
def test_invalid_interpolation(tmp_path: Path, template: str) -> None:
    error = _error(tmp_path, {"build": "app", "environment": [f"V={template}"]})
    assert "invalid interpolation in" in error.message
    assert "$$ for a literal $" in error.fix


@given(st.text(max_size=40))
def test_escaped_text_comes_back(text: str) -> None:
    """``$$`` is a literal ``$``: any text, escaped, interpolates to itself."""
    from reprocheck.compose import _Interpolation

    expand = _Interpolation({}, "f: service 's'", Path("/nonexistent/.env"))
    assert expand(text.replace("$", "$$"), "field") == text


@given(st.from_regex(r"[_A-Za-z][_A-Za-z0-9]{0,10}", fullmatch=True), st.text(max_size=20),
       st.text(max_size=20).filter(lambda t: "$" not in t and "}" not in t))  # fmt: skip
def test_each_operator_against_the_shell_rules(name: str, value: str, word: str) -> None:
    from reprocheck.compose import _Interpolation

    expand = _Interpolation({name: value}, "f: service 's'", Path("/nonexistent/.env"))
    unset = _Interpolation({}, "f: service 's'", Path("/nonexistent/.env"))
    assert expand(f"${{{name}}}", "f") == expand(f"${name}", "f") == value
    assert expand(f"${{{name}:-{word}}}", "f") == (value or word)
    assert expand(f"${{{name}-{word}}}", "f") == value
    assert unset(f"${{{name}-{word}}}", "f") == unset(f"${{{name}:-{word}}}", "f") == word
    assert expand(f"${{{name}:+{word}}}", "f") == (word if value else "")
    assert expand(f"${{{name}+{word}}}", "f") == word
    assert unset(f"${{{name}+{word}}}", "f") == ""


def test_dotenv_is_not_read_but_never_silently_skipped(tmp_path: Path) -> None:
    files = {".env": "TAG=from-dotenv\n"}
    error = _error(tmp_path, {"image": "org/app:${TAG:-dev}"}, files=files)
    assert "${TAG} is not set, and reprocheck does not read" in error.message
    assert ".env" in error.message
    assert error.fix.startswith("export TAG")
    # a variable set in the environment is what compose takes too (it wins over .env)
    assert _service(tmp_path, {"image": "org/app:${TAG}"}, {"TAG": "1"}).image == "org/app:1"
    # and a value-less environment entry
    error = _error(tmp_path, {"image": "i", "environment": ["FROM_DOTENV"]}, files=files)
    assert "${FROM_DOTENV} is not set" in error.message


# --- errors: one line naming the file and service, with a fix ---------------------------


@pytest.mark.parametrize(
    ("service", "files", "message", "fix"),
    [
        ({}, {}, "service 'svc' has neither build nor image", "give the service build:"),
        (None, {}, "service 'svc' is not a mapping", "give the service build:"),
        ({"image": ""}, {}, "has neither build nor image", "image:"),
        ({"image": 5}, {}, "image must be a string, got int", "quote the value of image"),
        ({"build": 5}, {}, "build must be a folder or a mapping", "build: ./folder"),
        ({"build": "nowhere"}, {}, "is not a folder", "relative to the compose file's folder"),
        (
            {"build": {"context": "app", "dockerfile": "Nope"}},
            {},
            "no Dockerfile",
            "relative to the build context",
        ),
        (
            {"build": {"context": "app", "dockerfile": "../Dockerfile"}},
            {"Dockerfile": "FROM x\n"},
            "is outside the build context",
            "move it into the context folder",
        ),
        (
            {"build": "https://github.com/org/repo.git#main"},
            {},
            "is remote, not supported",
            "clone it",
        ),
        ({"build": "git@github.com:org/repo.git"}, {}, "is remote, not supported", "clone it"),
        (
            {"build": {"context": "app", "target": "runtime"}},
            {},
            "build.target is not supported",
            "last one",
        ),
        (
            {"build": {"dockerfile_inline": "FROM x"}},
            {},
            "build.dockerfile_inline is not supported",
            "write it to a file",
        ),
        (
            {"build": {"context": "app", "additional_contexts": {}}},
            {},
            "build.additional_contexts is not",
            "copy",
        ),
        (
            {"build": {"context": "app", "secrets": []}},
            {},
            "build.secrets is not supported",
            "without",
        ),
        (
            {"build": {"context": "app", "ssh": ["default"]}},
            {},
            "build.ssh is not supported",
            "without",
        ),
        ({"build": "app", "env_file": ".env.app"}, {}, "env_file is not supported", "environment"),
        ({"build": "app", "extends": {"service": "base"}}, {}, "extends is not supported", "copy"),
        (
            {"build": {"context": "app", "args": "A=1"}},
            {},
            "build.args must be a mapping or a list",
            "KEY=value",
        ),
        (
            {"build": "app", "environment": "A=1"},
            {},
            "environment must be a mapping or a list",
            "KEY",
        ),
        (
            {"build": "app", "environment": [{"A": 1}]},
            {},
            "environment entry {'A': 1} is not KEY=VALUE",
            "quote",
        ),
        (
            {"build": "app", "environment": ["=x"]},
            {},
            "environment has an entry without a name",
            "KEY=VALUE",
        ),
        (
            {"build": "app", "environment": {"A": [1]}},
            {},
            "environment.A must be a string, a number",
            "quote",
        ),
        ({"build": "app", "platform": ["linux/amd64"]}, {}, "platform must be a string", "quote"),
    ],
)
def test_bad_service(tmp_path: Path, service: Any, files: dict[str, str], message: str, fix: str):
    error = _error(tmp_path, service, files=files)
    assert error.message.startswith(f"{tmp_path / 'docker-compose.yml'}: service 'svc'")
    assert message in error.message
    assert fix in error.fix


def test_missing_file_lists_the_compose_files_there(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    with pytest.raises(ConfigError) as info:
        load_service(tmp_path, IMAGE, {})
    assert info.value.message == f"compose file {tmp_path / 'docker-compose.yml'} does not exist"
    assert info.value.fix.endswith(f"compose files in {tmp_path}: compose.yaml")
    _one_line_with_fix(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").mkdir()
    with pytest.raises(ConfigError, match=r"docker-compose\.yml: cannot read"):
        load_service(tmp_path, IMAGE, {})
    (tmp_path / "bin.yml").write_bytes(b"\xff\xfe services")
    with pytest.raises(ConfigError, match=r"bin\.yml: cannot read: not UTF-8 text"):
        load_service(tmp_path, "compose:bin.yml#svc", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services:\n  svc: [\n", "invalid YAML: "),
        (
            "services:\n\tsvc: {}\n",
            "invalid YAML: found character '\\t' that cannot start any token at line 2, column 1",
        ),
        ("services: {a: 1\n", "invalid YAML: "),
        ("- a\n- b\n", "has no services mapping"),
        ("", "has no services mapping"),
        ("services: [svc]\n", "has no services mapping"),
        ("version: '3'\n", "has no services mapping"),
    ],
)
def test_bad_file(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_service(tmp_path, IMAGE, {})
    assert info.value.message.startswith(f"{tmp_path / 'docker-compose.yml'}")
    assert message in info.value.message
    _one_line_with_fix(info.value)


def test_unknown_service_lists_the_services(tmp_path: Path) -> None:
    _write(tmp_path, {"services": {"inference": {"build": "app"}, "db": {"image": "pg"}}})
    with pytest.raises(ConfigError) as info:
        load_service(tmp_path, "compose:docker-compose.yml#inferense", {})
    assert info.value.message == f"{tmp_path / 'docker-compose.yml'}: no service 'inferense'"
    assert info.value.fix == "did you mean 'inference'? services in it: db, inference"
    with pytest.raises(ConfigError) as info:
        load_service(tmp_path, "compose:docker-compose.yml#zzz", {})
    assert info.value.fix == "services in it: db, inference"
    _write(tmp_path, "services: {}\n")
    with pytest.raises(ConfigError, match=r"no service 'zzz' \(the file declares no service\)"):
        load_service(tmp_path, "compose:docker-compose.yml#zzz", {})


@pytest.mark.parametrize("image", ["compose:", "compose:docker-compose.yml",
                                   "compose:docker-compose.yml#", "compose:#svc"])  # fmt: skip
def test_reference_without_file_or_service(tmp_path: Path, image: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_service(tmp_path, image, {})
    assert info.value.message == f"{image!r} names no compose file and service"
    assert 'write "compose:FILE#SERVICE"' in info.value.fix


def test_file_path_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "home", {"services": {"svc": {"image": "i"}}})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for image in ("compose:~/docker-compose.yml#svc",
                  f"compose:{tmp_path}/home/docker-compose.yml#svc",
                  "compose:./home/../home/docker-compose.yml#svc"):  # fmt: skip
        assert load_service(tmp_path, image, {}).file == tmp_path / "home/docker-compose.yml"


def test_process_environment_is_the_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REPROCHECK_TEST_TAG", "42")
    _write(tmp_path, {"services": {"svc": {"image": "i:${REPROCHECK_TEST_TAG}"}}})
    assert load_service(tmp_path, IMAGE).image == "i:42"


def test_is_compose() -> None:
    assert is_compose("compose:docker-compose.yml#svc")
    assert not is_compose("docker.io/library/compose:1")
    assert not is_compose("images/compose")
