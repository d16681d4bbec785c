"""config_reference: every key is described, and docs/config.md is what the models render."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest

from reprocheck.config import (
    CompareConfig,
    DecisionConfig,
    EnvironmentConfig,
    ImagesConfig,
    MetricConfig,
    OutputsConfig,
    RunConfig,
    RunSettings,
    ToleranceConfig,
    choices_of,
    file_keys,
    load_config,
    without_none,
)
from reprocheck.config_reference import (
    COMMAND,
    config_models,
    default_text,
    main,
    reachable_models,
    render,
    sections,
    type_text,
)
from reprocheck.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
HEAD = (
    '[pipeline]\ncallable = "p.py:run"\n[[environments]]\nname = "a"\nimage = "debian:bookworm"\n'
)


def _fields():
    for model in config_models():
        for name, field in model.model_fields.items():
            yield f"{model.__name__}.{name}", field


def test_every_field_has_a_description() -> None:
    lacking = [name for name, field in _fields() if not (field.description or "").strip()]
    assert not lacking, f"give these fields a Field(description=...): {', '.join(lacking)}"
    short = [name for name, field in _fields() if not (field.description or "").endswith(".")]
    assert not short, f"end these descriptions with a full stop: {', '.join(short)}"


def test_every_model_is_part_of_the_configuration() -> None:
    assert set(config_models()) == set(reachable_models())


def test_every_closed_set_says_what_each_value_means() -> None:
    for name, field in _fields():
        annotation = without_none(field.annotation)
        if get_origin(annotation) is not Literal:
            continue
        choices = choices_of(field)
        assert choices is not None, f"{name}: annotate its Literal with Choices(...)"
        assert choices.values == get_args(annotation), f"{name}: Choices differ from the Literal"
        assert all(meaning.strip() for _value, meaning in choices.meanings), name


def test_docs_config_md_is_current() -> None:
    message = f"docs/config.md is out of date: regenerate it with `{COMMAND}` and commit it"
    assert DOCS.is_file(), message
    assert DOCS.read_text(encoding="utf-8") == render(), message


def test_main_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    main()
    assert capsys.readouterr().out == render()


def test_every_key_is_in_exactly_one_section() -> None:
    listed = [(section.model, key) for section in sections() for key in section.keys]
    assert len(listed) == len(set(listed))
    tables = {"pipeline", "fixtures", "outputs", "environments", "compare", "run", "images"}
    tables |= {"tolerance", "decisions", "metrics"}
    expected = {
        (model, key)
        for model in reachable_models()
        for key in file_keys(model)
        if not (model is RunConfig and key in tables)
    }
    assert set(listed) == expected


def test_sections_and_their_headings() -> None:
    headings = [section.heading for section in sections()]
    assert headings == [
        "Top-level keys", "`[pipeline]`", "`[fixtures]`", "`[outputs]`", "`[[environments]]`",
        "`[compare]`", "`[run]`", "`[images]`", "`[tolerance]`", "`[decisions]`", "`[metrics]`",
    ]  # fmt: skip
    assert sections()[0].keys == ("reports", "baselines", "history")  # not root, source
    text = render()
    assert '`[tolerance."GLOB"]` table' in text
    assert "[`[[environments]]`](#environments)" in text


def test_table_rows_have_four_cells() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(section.keys) for section in sections())
    for row in rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == 5, row  # a | in a cell is escaped


@pytest.mark.parametrize(
    ("model", "key", "type_", "default"),
    [
        (RunSettings, "cpus", "number, ≥ 0.01, finite", "not set"),
        (RunSettings, "jobs", "integer, ≥ 1", "not set"),
        (RunSettings, "shm_size", "string", '`"1g"`'),
        (RunSettings, "read_only", "boolean", "`true`"),
        (RunSettings, "network", 'one of `"none"`, `"bridge"`, `"host"`', '`"none"`'),
        (OutputsConfig, "max_file_bytes", "integer, > 0", "`2_147_483_648`"),
        (OutputsConfig, "include", "array of strings", '`["*"]`'),
        (ToleranceConfig, "max_mismatch_fraction", "number, 0 ≤ x ≤ 1", "`0.0`"),
        (DecisionConfig, "kind", 'one of `"argmax"`, `"labels"`, `"boxes"`', "required"),
        (DecisionConfig, "iou", "number, 0 < x ≤ 1", "`0.5`"),
        (MetricConfig, "unit", "string, at most 16 characters", '`""`'),
    ],
)
def test_type_and_default_come_from_the_model(model, key, type_, default) -> None:
    field = model.model_fields[key]
    assert type_text(field) == type_
    assert default_text(field) == default


def test_each_value_of_a_closed_set_is_explained() -> None:
    text = render()
    for name in ("argmax", "labels", "boxes", "baseline", "all-pairs", "pass", "fail", "rows"):
        assert f'<br>`"{name}"`: ' in text


@pytest.mark.parametrize(
    ("model", "header"),
    [
        (CompareConfig, "[compare]"),
        (RunSettings, "[run]"),
        (ImagesConfig, "[images]"),
        (ToleranceConfig, '[tolerance."*/x"]'),
        (DecisionConfig, '[decisions."*/x"]'),
        (EnvironmentConfig, '[[environments]]\nname = "z"\nimage = "debian:bookworm"'),
    ],
)
def test_every_closed_set_error_lists_the_valid_values(make_project, model, header) -> None:
    closed = [(key, choices_of(f)) for key, f in model.model_fields.items() if choices_of(f)]
    assert closed
    for key, choices in closed:
        assert choices is not None
        source = make_project(HEAD + f'{header}\n{key} = "nope"\n')
        with pytest.raises(ConfigError) as info:
            load_config(source)
        said = f'"nope" is not {choices.noun}; use one of {", ".join(choices.values)}'
        assert str(info.value).endswith(said)


def test_the_closed_set_cases_cover_every_model_with_one() -> None:
    with_choices = {
        model
        for model in config_models()
        if any(choices_of(field) for field in model.model_fields.values())
    }
    covered = {CompareConfig, RunSettings, ImagesConfig, ToleranceConfig, DecisionConfig,
               EnvironmentConfig}  # fmt: skip
    assert with_choices <= covered, "add the new model to the parametrize list above"
