"""plan: environments x fixtures, selected by --env and by fixture globs."""

from __future__ import annotations

import pytest

from reprocheck.config import load_config
from reprocheck.errors import ConfigError
from reprocheck.plan import make_plan, matches

FIXTURE_FILES = {
    "inputs/a.jpg": "",
    "inputs/b.png": "",
    "inputs/sub/c.jpg": "",
    "inputs/sub/skip_me.jpg": "",
    "inputs/notes.txt": "",
}


def _config(make_project, fixtures: str = "", pipeline: str = 'callable = "p.py:run"'):
    text = f"""
[pipeline]
{pipeline}

[fixtures]
path = "inputs"
{fixtures}

[[environments]]
name = "one"
image = "debian:bullseye"

[[environments]]
name = "two"
image = "debian:bookworm"

[[environments]]
name = "three"
image = "debian:trixie"
"""
    return load_config(make_project(text, FIXTURE_FILES))


def test_all_fixtures_sorted_posix_relative(make_project) -> None:
    plan = make_plan(_config(make_project))
    assert plan.fixtures == ("a.jpg", "b.png", "notes.txt", "sub/c.jpg", "sub/skip_me.jpg")
    assert [e.name for e in plan.environments] == ["one", "two", "three"]


def test_include_and_exclude_globs(make_project) -> None:
    config = _config(make_project, 'include = ["*.jpg", "*.png"]\nexclude = ["*/skip_*"]')
    assert make_plan(config).fixtures == ("a.jpg", "b.png", "sub/c.jpg")


def test_include_glob_that_matches_one_folder(make_project) -> None:
    config = _config(make_project, 'include = ["sub/*"]')
    assert make_plan(config).fixtures == ("sub/c.jpg", "sub/skip_me.jpg")


def test_callable_with_no_matching_fixture_is_an_error(make_project) -> None:
    config = _config(make_project, 'include = ["*.tiff"]')
    with pytest.raises(ConfigError, match=r"no fixture files .* match"):
        make_plan(config)


def test_command_may_run_without_fixtures(make_project) -> None:
    config = _config(make_project, 'include = ["*.tiff"]', pipeline='command = ["true"]')
    assert make_plan(config).fixtures == ()


def test_missing_fixtures_folder_is_named(make_project) -> None:
    config = _config(make_project)
    (config.root / "inputs").rename(config.root / "elsewhere")
    with pytest.raises(ConfigError) as info:
        make_plan(config)
    message = str(info.value)
    assert "fixtures.path 'inputs'" in message
    assert str(config.root / "inputs") in message
    assert str(config.source) in message


def test_fixtures_path_that_is_a_file(make_project) -> None:
    config = _config(make_project)
    (config.root / "plain").write_text("")
    fixtures = config.fixtures.model_copy(update={"path": "plain"})
    config = config.model_copy(update={"fixtures": fixtures})
    with pytest.raises(ConfigError, match="is not a folder"):
        make_plan(config)


def test_env_selection_keeps_config_order(make_project) -> None:
    plan = make_plan(_config(make_project), ("three", "one"))
    assert [e.name for e in plan.environments] == ["one", "three"]


def test_unknown_env_name(make_project) -> None:
    with pytest.raises(ConfigError) as info:
        make_plan(_config(make_project), ("one", "four"))
    assert "no environment named 'four'" in str(info.value)
    assert "known: one, two, three" in str(info.value)


@pytest.mark.parametrize(
    ("name", "include", "exclude", "expected"),
    [
        ("a/b.npy", ("*",), (), True),
        ("a/b", ("a/*",), ("*/b",), False),
        ("a.JPG", ("*.jpg",), (), False),  # case-sensitive on every OS
        ("x.jpg", (), (), False),
    ],
)
def test_matches(name, include, exclude, expected) -> None:
    assert matches(name, include, exclude) is expected
