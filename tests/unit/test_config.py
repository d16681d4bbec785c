"""config: reprocheck.toml and [tool.reprocheck] load; every mistake is one precise ConfigError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reprocheck.config import (
    DecisionConfig,
    MetricConfig,
    OutputsConfig,
    find_config,
    load_config,
    size_bytes,
)
from reprocheck.errors import EXIT_ERROR, ConfigError

REPO = Path(__file__).resolve().parents[2]

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


@pytest.mark.parametrize("value", ["64m", "16g", "6291456", "512MB", "6144k"])
def test_memory_sizes_docker_accepts(make_project, value) -> None:
    source = make_project(f'[pipeline]\ncallable = "p.py:run"\n[run]\nmemory = "{value}"\n' + ENVS)
    assert load_config(source).run.memory == value


def test_shm_size_is_checked_too(make_project) -> None:
    source = make_project('[pipeline]\ncallable = "p.py:run"\n[run]\nshm_size = "big"\n' + ENVS)
    assert "field 'run.shm_size'" in str(_error(source))


# --- limits and closed sets: every out-of-range value is an error at load time ----------------

HEAD = '[pipeline]\ncallable = "p.py:run"\n' + ENVS


@pytest.mark.parametrize(
    ("snippet", "dotted", "says"),
    [
        ("[run]\npids_limit = 0", "run.pids_limit", "there is no 'unlimited'"),
        ("[run]\npids_limit = -1", "run.pids_limit", "use a positive number"),
        ("[run]\ncpus = 0", "run.cpus", "greater than or equal to 0.01, got 0"),
        ("[run]\ncpus = -2.0", "run.cpus", "got -2.0"),
        ("[run]\ncpus = nan", "run.cpus", "finite number"),
        ("[run]\ntimeout = 0", "run.timeout", "greater than 0, got 0"),
        ("[run]\ntimeout = -5", "run.timeout", "greater than 0"),
        ("[run]\ntimeout = inf", "run.timeout", "finite number, got inf"),
        ("[run]\nrepeat = 0", "run.repeat", "greater than or equal to 1, got 0"),
        ("[run]\njobs = 0", "run.jobs", "greater than or equal to 1, got 0"),
        ('[run]\nmemory = "0"', "run.memory", "less than Docker's minimum of 6m"),
        ('[run]\nmemory = "0g"', "run.memory", "less than Docker's minimum of 6m"),
        ('[run]\nmemory = "5m"', "run.memory", "less than Docker's minimum of 6m"),
        ('[run]\nmemory = "6291455"', "run.memory", "less than Docker's minimum of 6m"),
        ('[run]\nshm_size = "0"', "run.shm_size", "0 bytes"),
        ('[run]\nshm_size = "0k"', "run.shm_size", "0 bytes"),
        ('[run]\nnetwork = "off"', "run.network", '"off" is not a network mode; use one of'),
        ("[outputs]\nmax_file_bytes = 0", "outputs.max_file_bytes", "greater than 0"),
        ("[outputs]\nmax_array_bytes = -1", "outputs.max_array_bytes", "greater than 0"),
        ("[tolerance]\ndefault = { atol = -1e-9 }", "tolerance.default.atol", ">= 0"),
        ("[tolerance]\ndefault = { atol = nan }", "tolerance.default.atol", ">= 0"),
        ('[tolerance]\n"*/x" = { rtol = -1 }', 'tolerance."*/x".rtol', ">= 0"),
        ("[tolerance]\ndefault = { ulp = -1 }", "tolerance.default.ulp", ">= 0"),
        (
            "[tolerance]\ndefault = { max_mismatch_fraction = 1.5 }",
            "tolerance.default.max_mismatch_fraction",
            "less than or equal to 1",
        ),
        ('[tolerance]\ndefault = { match = "row" }', "tolerance.default.match", "elements, rows"),
        ('[decisions]\n"*/b" = { kind = "boxes", iou = 0 }', 'decisions."*/b".iou', "than 0"),
        ('[decisions]\n"*/b" = { kind = "boxes", iou = 1.5 }', 'decisions."*/b".iou', "than or"),
        ('[decisions]\n"*/p" = "argmx"', 'decisions."*/p"', "argmax, labels, boxes"),
        ('[decisions]\n"*/p" = { kind = "top1" }', 'decisions."*/p".kind', "argmax, labels"),
        ('[decisions]\n"*/p" = 3', 'decisions."*/p"', "3 is not a decision kind; use one of"),
        ('[decisions]\n"*/p" = { kind = "argmax", iou = 0.3 }', 'decisions."*/p"', "'boxes' only"),
        ('[compare]\nmode = "pairs"', "compare.mode", "use one of baseline, all-pairs"),
        ('[images]\nbootstrap = "always"', "images.bootstrap", "use one of auto, never"),
        ('[metrics]\n"*/acc" = { atol = -0.1 }', 'metrics."*/acc".atol', ">= 0"),
        ('[metrics]\n"*/acc" = { rtol = nan }', 'metrics."*/acc".rtol', ">= 0"),
        ('[metrics]\n"*/acc" = { scale = 0 }', 'metrics."*/acc".scale', "greater than 0, got 0"),
        ('[metrics]\n"*/acc" = { scale = inf }', 'metrics."*/acc".scale', "finite number"),
        (
            '[metrics]\n"*/acc" = { unit = "percent!!!!!!!!!!" }',
            'metrics."*/acc".unit',
            "at most 16",
        ),
        ('[metrics]\n"*/acc" = { unit = "p\\u0000p" }', 'metrics."*/acc".unit', "printable"),
    ],
)
def test_out_of_range_value(make_project, snippet, dotted, says) -> None:
    source = make_project(HEAD + snippet + "\n")
    message = str(_error(source))
    assert message.startswith(f"{source.resolve()}: field '{dotted}': ")
    assert says.replace(">=", "greater than or equal to") in message


@pytest.mark.parametrize(
    "snippet",
    [
        "[run]\npids_limit = 1",
        "[run]\ncpus = 0.01",
        "[run]\ntimeout = 0.5",
        '[run]\nmemory = "6m"\nshm_size = "1"',
        "[outputs]\nmax_file_bytes = 1\nmax_array_bytes = 1",
        "[tolerance]\ndefault = { max_mismatch_fraction = 1, ulp = 0 }",
        '[decisions]\n"*/b" = { kind = "boxes", iou = 1 }',
    ],
)
def test_smallest_and_largest_values_allowed(make_project, snippet) -> None:
    load_config(make_project(HEAD + snippet + "\n"))


def test_max_array_bytes(make_project) -> None:
    assert OutputsConfig().max_array_bytes == 512 * 1024**2
    config = load_config(make_project(HEAD + "[outputs]\nmax_array_bytes = 1024\n"))
    assert config.outputs.max_array_bytes == 1024


def test_decision_kind_alone_is_short_for_a_table(make_project) -> None:
    snippet = '[decisions]\n"*/p" = "argmax"\n"*/b" = { kind = "boxes", iou = 0.7 }\n'
    decisions = load_config(make_project(HEAD + snippet)).decisions
    assert decisions == {
        "*/p": DecisionConfig(kind="argmax"),
        "*/b": DecisionConfig(kind="boxes", iou=0.7),
    }


def test_size_bytes() -> None:
    assert [size_bytes(s) for s in ("1", "2b", "3k", "4KB", "5m", "6g")] == [
        1, 2, 3 * 1024, 4 * 1024, 5 * 1024**2, 6 * 1024**3,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="is not a size"):
        size_bytes("10bb")


def test_control_characters_stay_on_one_line(make_project) -> None:
    error = _error(make_project('"a\\nb" = 1\n' + HEAD))
    assert """unknown key '"a\\nb"'""" in str(error)


# --- closed sets: a wrong value is named with the valid ones, on one line --------------------


@pytest.mark.parametrize(
    ("snippet", "dotted", "says"),
    [
        (
            '[compare]\nmode = "pairs"',
            "compare.mode",
            '"pairs" is not a compare mode; use one of baseline, all-pairs',
        ),
        (
            "[compare]\nmode = 3",
            "compare.mode",
            "3 is not a compare mode; use one of baseline, all-pairs",
        ),
        (
            '[compare]\nnew_outputs = "warn"',
            "compare.new_outputs",
            '"warn" is not a setting for new outputs; use one of pass, fail',
        ),
        (
            '[run]\nnetwork = "off"',
            "run.network",
            '"off" is not a network mode; use one of none, bridge, host',
        ),
        (
            '[decisions]\n"*/probs" = "softmax"',
            'decisions."*/probs"',
            '"softmax" is not a decision kind; use one of argmax, labels, boxes',
        ),
        (
            '[decisions."*/probs"]\nkind = "softmax"',
            'decisions."*/probs".kind',
            '"softmax" is not a decision kind; use one of argmax, labels, boxes',
        ),
        (
            '[decisions]\n"*/probs" = ["argmax"]',
            'decisions."*/probs"',
            "an array is not a decision kind; use one of argmax, labels, boxes, or a table like "
            '{ kind = "boxes", iou = 0.5 }',
        ),
        (
            '[tolerance]\n"*/keypoints/*" = { match = "row", atol = 0.5 }',
            'tolerance."*/keypoints/*".match',
            '"row" is not a match mode; use one of elements, rows',
        ),
        (
            "[images]\nbootstrap = true",
            "images.bootstrap",
            "true is not a bootstrap setting; use one of auto, never",
        ),
    ],
)
def test_closed_set_errors_name_the_valid_values(make_project, snippet, dotted, says) -> None:
    source = make_project(HEAD + snippet + "\n")
    assert str(_error(source)) == f"{source.resolve()}: field '{dotted}': {says}"


def test_a_long_wrong_value_is_cut_short(make_project) -> None:
    source = make_project(HEAD + f'[compare]\nmode = "{"x" * 200}"\n')
    message = str(_error(source))
    assert f'"{"x" * 37}..." is not a compare mode' in message
    assert "x" * 41 not in message


@pytest.mark.parametrize(
    ("snippet", "dotted", "says"),
    [
        ('[tolerance]\n"*/x" = "rows"', 'tolerance."*/x"', "keys atol, rtol, ulp,"),
        ('compare = "all-pairs"\n', "compare", "use a table with the keys mode, cpus, new_outputs"),
        ("tolerance = 3\n", "tolerance", "3 is not a table"),
    ],
)
def test_a_value_that_should_be_a_table(make_project, snippet, dotted, says) -> None:
    text = snippet + HEAD if snippet.endswith("\n") else HEAD + snippet + "\n"
    message = str(_error(make_project(text)))
    assert f"field '{dotted}': " in message
    assert "is not a table" in message
    assert says in message


def test_unknown_key_suggests_the_close_one(make_project) -> None:
    error = _error(make_project(HEAD + "[run]\ntimout = 3\n"))
    assert error.fix == "did you mean 'timeout'? docs/config.md lists every key"
    error = _error(make_project(HEAD + '[tolerance]\n"*/x" = { atl = 1 }\n'))
    assert """unknown key 'tolerance."*/x".atl' (did you mean 'atol'?""" in str(error)


def test_unknown_key_lists_the_keys_of_its_table(make_project) -> None:
    error = _error(make_project(HEAD + "[compare]\nzzz = 1\n"))
    assert error.fix == "valid keys here: mode, cpus, new_outputs; docs/config.md describes them"


@pytest.mark.parametrize("key", ["root", "source"])
def test_fields_load_config_sets_are_not_keys(make_project, key) -> None:
    error = _error(make_project(f'{key} = "/elsewhere"\n' + HEAD))
    assert f"unknown key '{key}'" in str(error)


# --- [compare] new_outputs and [metrics] --------------------------------------------------------


def test_new_keys_default_to_passing_and_none(make_project) -> None:
    config = load_config(make_project(HEAD))
    assert config.compare.new_outputs == "pass"
    assert config.metrics == {}


def test_new_outputs_and_metrics_load(make_project) -> None:
    snippet = (
        '[compare]\nnew_outputs = "fail"\n'
        '[metrics]\n"*/accuracy" = { atol = 0.005, unit = "pp", scale = 100 }\n'
        '[metrics."*/mean_loss"]\nrtol = 0.01\n'
    )
    config = load_config(make_project(HEAD + snippet))
    assert config.compare.new_outputs == "fail"
    assert config.metrics == {
        "*/accuracy": MetricConfig(atol=0.005, unit="pp", scale=100.0),
        "*/mean_loss": MetricConfig(rtol=0.01),
    }
    assert config.metrics["*/mean_loss"] == MetricConfig(atol=0.0, rtol=0.01, unit="", scale=1.0)


def test_metric_keys_are_checked(make_project) -> None:
    error = _error(make_project(HEAD + '[metrics]\n"*/acc" = { tolerance = 1 }\n'))
    assert """unknown key 'metrics."*/acc".tolerance'""" in str(error)


# --- images: a folder with a Dockerfile, or a valid image reference ---------------------------

TRIXIE = {"images/debian-trixie/Dockerfile": "FROM debian:trixie\n", "images/empty/x": ""}


def _image_project(make_project, image: str, files: dict[str, str] | None = None) -> Path:
    text = f'[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "e"\nimage = "{image}"\n'
    return make_project(text, TRIXIE if files is None else files)


@pytest.mark.parametrize(
    "image",
    [
        "debian:bookworm",
        "ubuntu",
        "reprocheck/debian-arm64:bookworm",
        "127.0.0.1:5000/name@sha256:" + "0123456789abcdef" * 4,
        "ghcr.io/org/img:tag",
        "localhost:5000/a/b_c__d---e.f:v1.2-rc_3",
        "docker.io/library/debian:bookworm@sha256:" + "a" * 64,
        "[::1]:5000/img:tag",
        "img/new:1",
        "imgs/debian-trixie",  # no imgs/ folder: a registry reference, as Docker reads it
    ],
)
def test_valid_image_references(make_project, image) -> None:
    config = load_config(_image_project(make_project, image))
    assert config.environments[0].image == image
    assert config.dockerfile_folder(config.environments[0]) is None


@pytest.mark.parametrize(
    "image",
    [
        "Debian:Bookworm",
        "Images/Debian-Trixie",
        "debian bookworm",
        "debian:",
        ":bookworm",
        "debian::bookworm",
        "debian:-bookworm",
        "debian@sha256:abc",
        "ghcr.io/Org/img",
        "img/",
        "-img",
        "a" * 256,
    ],
)
def test_invalid_image_references(make_project, image) -> None:
    message = str(_error(_image_project(make_project, image)))
    assert f"field 'environments.0.image': {image!r} is neither an existing folder" in message
    assert 'lowercase, like "debian:bookworm"' in message


@pytest.mark.parametrize(
    "image", ["images/debian-trixie", "./images/debian-trixie", "images/../images/debian-trixie"]
)
def test_dockerfile_folder(make_project, image) -> None:
    config = load_config(_image_project(make_project, image))
    folder = config.dockerfile_folder(config.environments[0])
    assert folder == (config.root / "images/debian-trixie").resolve()


def test_absolute_and_home_folders(make_project, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "project"))
    for image in (str(REPO / "images/debian-bookworm"), "~/images/debian-trixie"):
        config = load_config(_image_project(make_project, image))
        assert config.dockerfile_folder(config.environments[0]) is not None


@pytest.mark.parametrize("image", ["images/Debian-Trixie", "images/debian-trixy"])
def test_missing_folder_is_not_a_registry_reference(make_project, image) -> None:
    source = _image_project(make_project, image)
    message = str(_error(source))
    assert f"field 'environments.0.image': no folder {source.parent / image} " in message
    assert "did you mean 'images/debian-trixie'?" in message
    assert f"folders in {source.parent / 'images'}: debian-trixie, empty)" in message


@pytest.mark.parametrize("image", ["./nowhere/x", "/nonexistent-reprocheck/x", "~/nowhere"])
def test_missing_path_like_folder(make_project, tmp_path, monkeypatch, image) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    message = str(_error(_image_project(make_project, image)))
    assert "field 'environments.0.image': no folder " in message
    assert 'an image reference is lowercase, like "debian:bookworm"' in message


def test_folder_without_dockerfile(make_project) -> None:
    message = str(_error(_image_project(make_project, "images/empty")))
    assert "field 'environments.0.image': folder " in message
    assert "images/empty has no Dockerfile (add a Dockerfile" in message


def test_folder_of_dockerfile_folders(make_project) -> None:
    message = str(_error(_image_project(make_project, "images")))
    assert "has no Dockerfile (folders with a Dockerfile in it: debian-trixie)" in message


def test_the_bad_image_is_named_by_its_index(make_project) -> None:
    text = (
        '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\nimage = "debian:bookworm"'
        '\n[[environments]]\nname = "b"\nimage = "images/Debian-Trixie"\n'
    )
    assert "field 'environments.1.image'" in str(_error(make_project(text, TRIXIE)))


def test_dockerfile_folder_checks_again(make_project) -> None:
    config = load_config(_image_project(make_project, "images/debian-trixie"))
    (config.root / "images/debian-trixie/Dockerfile").unlink()
    with pytest.raises(ConfigError, match=r"environment 'e': folder .* has no Dockerfile"):
        config.dockerfile_folder(config.environments[0])


@pytest.mark.parametrize("name", ["reprocheck.toml", "reprocheck-arm64.toml"])
def test_repository_configs_stay_valid(name) -> None:
    config = load_config(REPO / name)
    assert all(config.dockerfile_folder(env) for env in config.environments)


def test_missing_folder_lists_visible_folders_next_to_it(make_project) -> None:
    source = _image_project(make_project, "./trixie", {**TRIXIE, ".git/HEAD": ""})
    message = str(_error(source))
    assert f"no folder {source.parent / 'trixie'} to build from" in message
    assert message.endswith(f"(folders in {source.parent}: images)")


@pytest.mark.parametrize(
    ("env", "says"),
    [('{ "A=B" = "1" }', "'A=B' is no variable name"), ('{ "" = "1" }', "'' is no variable name"),
     ('{ A = "x\\u0000y" }', "the value of A holds a NUL")],
)  # fmt: skip
def test_environment_variables_a_process_can_carry(make_project, env: str, says: str) -> None:
    text = '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\nimage = "i"\n'
    error = _error(make_project(text + f"env = {env}\n"))
    assert "field 'environments.0.env'" in str(error) and says in str(error)
