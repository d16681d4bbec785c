"""config: reprocheck.toml and [tool.reprocheck] load; every mistake is one precise ConfigError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reprocheck.config import find_config, load_config
from reprocheck.errors import EXIT_ERROR, ConfigError

VALID = """
[pipeline]
callable = "pipelines/edges.py:run"

[fixtures]
path = "inputs"
include = ["*.png"]

[[environments]]
name = "bullseye"
image = "images/debian-bullseye"
env = { OMP_NUM_THREADS = "1" }

[[environments]]
name = "bookworm"
image = "debian:bookworm"

[run]
timeout = 30
memory = "2g"

[compare]
mode = "all-pairs"
"""

ENVS = """
[[environments]]
name = "a"
image = "debian:bookworm"
"""


def _error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == EXIT_ERROR
    assert "\n" not in str(info.value), "a config error is one line"
    return info.value


def test_reprocheck_toml_loads(make_project) -> None:
    source = make_project(VALID)
    config = load_config(source)
    assert config.source == source.resolve()
    assert config.root == source.parent.resolve()
    assert config.pipeline.callable == "pipelines/edges.py:run"
    assert config.pipeline.command is None
    assert [e.name for e in config.environments] == ["bullseye", "bookworm"]
    assert config.environments[0].env == {"OMP_NUM_THREADS": "1"}
    assert config.fixtures.include == ("*.png",)
    assert config.fixtures_dir == (source.parent / "inputs").resolve()
    assert config.run.timeout == 30
    assert config.run.memory == "2g"
    assert config.compare.mode == "all-pairs"


def test_defaults_are_hardened(make_project) -> None:
    config = load_config(make_project('[pipeline]\ncallable = "p.py:run"\n' + ENVS))
    assert config.run.network == "none"
    assert config.run.read_only is True
    assert config.run.user is None  # the runner picks a non-root user
    assert config.compare.mode == "baseline"


def test_pyproject_table_loads(make_project) -> None:
    tables = VALID.replace("[[environments]]", "[[tool.reprocheck.environments]]")
    tables = re.sub(r"^\[(\w+)\]$", r"[tool.reprocheck.\1]", tables, flags=re.M)
    pyproject = "[project]\nname = 'x'\n" + tables
    source = make_project(pyproject, name="pyproject.toml")
    config = load_config(source)
    assert config.pipeline.callable == "pipelines/edges.py:run"
    assert [e.name for e in config.environments] == ["bullseye", "bookworm"]
    assert config.run.timeout == 30


def test_find_config_walks_up_and_skips_pyproject_without_table(make_project, tmp_path) -> None:
    outer = make_project(VALID)
    inner = make_project("[project]\nname = 'x'\n", name="pyproject.toml", root=outer.parent / "a")
    (inner.parent / "b").mkdir()
    assert find_config(inner.parent / "b") == outer


def test_find_config_prefers_reprocheck_toml(make_project) -> None:
    source = make_project(VALID)
    make_project("[tool.reprocheck]\n", name="pyproject.toml")
    assert find_config(source.parent) == source


def test_no_config_anywhere(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no reprocheck\.toml"):
        load_config()


@pytest.mark.parametrize(
    ("snippet", "dotted"),
    [
        ("\n[run]\ntimout = 3\n", "run.timout"),
        ("colour = 'red'\n", "colour"),
        ("\n[fixtures]\npaths = 'x'\n", "fixtures.paths"),
    ],
)
def test_unknown_key_names_file_and_dotted_key(make_project, snippet, dotted) -> None:
    source = make_project(snippet + '[pipeline]\ncallable = "p.py:run"\n' + ENVS)
    error = _error(source)
    assert str(source.resolve()) in str(error)
    assert f"unknown key '{dotted}'" in str(error)


def test_unknown_key_inside_an_environment(make_project) -> None:
    source = make_project('[pipeline]\ncallable = "p.py:run"\n' + ENVS + 'imagee = "x"\n')
    assert "unknown key 'environments.0.imagee'" in str(_error(source))


def test_unknown_key_in_pyproject_names_pyproject(make_project) -> None:
    source = make_project(
        '[tool.reprocheck.pipeline]\ncallable = "p.py:run"\nkallable = 1\n'
        '[[tool.reprocheck.environments]]\nname = "a"\nimage = "debian:bookworm"\n',
        name="pyproject.toml",
    )
    error = _error(source)
    assert str(source.resolve()) in str(error)
    assert "pipeline.kallable" in str(error)


@pytest.mark.parametrize(
    "pipeline",
    [
        '[pipeline]\ncallable = "p.py:run"\ncommand = ["python3", "x.py"]\n',
        "[pipeline]\n",
    ],
    ids=["both", "neither"],
)
def test_callable_and_command_are_exclusive(make_project, pipeline) -> None:
    error = _error(make_project(pipeline + ENVS))
    assert "field 'pipeline'" in str(error)
    assert "exactly one of 'callable' or 'command'" in str(error)


def test_callable_needs_a_function(make_project) -> None:
    error = _error(make_project('[pipeline]\ncallable = "p.py"\n' + ENVS))
    assert "path/to/file.py:function" in str(error)


def test_command_alone_is_valid(make_project) -> None:
    config = load_config(
        make_project('[pipeline]\ncommand = ["python3", "x.py", "{inputs}", "{outputs}"]\n' + ENVS)
    )
    assert config.pipeline.command == ("python3", "x.py", "{inputs}", "{outputs}")


def test_duplicate_environment_names(make_project) -> None:
    error = _error(make_project('[pipeline]\ncallable = "p.py:run"\n' + ENVS + ENVS))
    assert "environment names must be unique" in str(error)
    assert "repeated: a" in str(error)


def test_environment_name_characters(make_project) -> None:
    source = make_project(
        '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a b"\nimage = "x"\n'
    )
    assert "field 'environments.0.name'" in str(_error(source))


@pytest.mark.parametrize(
    ("text", "dotted"),
    [
        (ENVS, "pipeline"),
        ('[pipeline]\ncallable = "p.py:run"\n', "environments"),
        (
            '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\n',
            "environments.0.image",
        ),
    ],
)
def test_missing_required_key(make_project, text, dotted) -> None:
    error = _error(make_project(text))
    assert f"missing required key '{dotted}'" in str(error)


def test_empty_environment_list(make_project) -> None:
    error = _error(make_project('environments = []\n[pipeline]\ncallable = "p.py:run"\n'))
    assert "at least one [[environments]]" in str(error)


def test_invalid_toml_names_file(make_project) -> None:
    source = make_project('[pipeline\ncallable = "p.py:run"\n')
    error = _error(source)
    assert str(source.resolve()) in str(error)
    assert "invalid TOML" in str(error)


def test_wrong_type(make_project) -> None:
    source = make_project('[pipeline]\ncallable = "p.py:run"\n[run]\ntimeout = "soon"\n' + ENVS)
    assert "field 'run.timeout'" in str(_error(source))


def test_missing_config_file(tmp_path) -> None:
    error = _error(tmp_path / "nope.toml")
    assert "nope.toml" in str(error)
    assert "does not exist" in str(error)


@pytest.mark.parametrize("value", ["lots", "1.5g", "64 m", "-1m", ""])
def test_memory_must_be_a_docker_size(make_project, value) -> None:
    source = make_project(f'[pipeline]\ncallable = "p.py:run"\n[run]\nmemory = "{value}"\n' + ENVS)
    error = _error(source)
    assert "field 'run.memory'" in str(error)
    assert "is not a size" in str(error)


@pytest.mark.parametrize("value", ["64m", "16g", "1024", "512MB", "2k"])
def test_memory_sizes_docker_accepts(make_project, value) -> None:
    source = make_project(f'[pipeline]\ncallable = "p.py:run"\n[run]\nmemory = "{value}"\n' + ENVS)
    assert load_config(source).run.memory == value


def test_shm_size_is_checked_too(make_project) -> None:
    source = make_project('[pipeline]\ncallable = "p.py:run"\n[run]\nshm_size = "big"\n' + ENVS)
    assert "field 'run.shm_size'" in str(_error(source))
