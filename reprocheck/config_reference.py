"""The configuration reference, docs/config.md, rendered from the config models themselves.

    python -m reprocheck.config_reference > docs/config.md

Every key's type, default and meaning come from :mod:`reprocheck.config`: the fields'
annotations, constraints, defaults and descriptions, and the :class:`~reprocheck.config.Choices`
a closed set of values carries. The reference therefore says what ``load_config`` accepts; a
unit test fails when the committed file differs from what this module renders.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from reprocheck import config
from reprocheck.config import RunConfig, choices_of, file_keys, is_model, without_none

COMMAND = "python -m reprocheck.config_reference > docs/config.md"

_INTRO = """\
reprocheck reads `reprocheck.toml`, or the same tables under `[tool.reprocheck]` in
`pyproject.toml`, found in the current folder or the nearest parent (`--config PATH` names
another). Paths are relative to the folder of that file. Globs (`include`, `exclude` and the
keys of `[tolerance]`, `[decisions]` and `[metrics]`) match case-sensitively, and their `*`
also matches `/`. An output is named `<fixture path>/<key>` for a callable pipeline
(`cats/01.jpg/dnn/probabilities`) and after its file for a command (see `command`).

A mistake is reported before any container runs, on one line that names the file, the key and
what to write instead (for a closed set of values, the valid ones)."""

_TOP_INTRO = (
    "Keys outside any table. Write them before the first `[table]` header: TOML puts every "
    "key after a header into that table."
)
_TYPE_NAMES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_PLURALS = {"string": "strings", "integer": "integers", "number": "numbers", "boolean": "booleans"}
_FLIPPED = {"<": ">", "≤": "≥"}  # "0 < x" read from x's side


@dataclass(frozen=True, kw_only=True)
class Section:
    """One table of the file: its heading, what it is for and the keys it takes."""

    heading: str  # "`[run]`", "`[[environments]]`", "Top-level keys"
    intro: str
    model: type[BaseModel]
    keys: tuple[str, ...]


def config_models() -> list[type[BaseModel]]:
    """Every public pydantic model defined in :mod:`reprocheck.config`."""
    return [
        value
        for name, value in inspect.getmembers(config, inspect.isclass)
        if issubclass(value, BaseModel)
        and value.__module__ == config.__name__
        and not name.startswith("_")
    ]


def reachable_models(model: type[BaseModel] = RunConfig) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold, at any depth, in the order they appear."""
    found = [model]
    for field in model.model_fields.values():
        inner = _table_of(field)
        if inner is not None:
            found += [each for each in reachable_models(inner[1]) if each not in found]
    return found


def sections() -> list[Section]:
    """The top-level keys, then every table in the models' order."""
    return list(_sections(RunConfig, "", "Top-level keys", _TOP_INTRO))


def render() -> str:
    """docs/config.md."""
    found = sections()
    contents = ", ".join(f"[{s.heading}](#{_anchor(s.heading)})" for s in found)
    parts = [
        "# Configuration reference",
        f"<!-- Generated from reprocheck/config.py by `{COMMAND}`: edit the models, not this "
        "file. -->",
        _INTRO,
        f"Sections: {contents}.",
    ]
    parts += [_section_text(section) for section in found]
    return "\n\n".join(parts) + "\n"


def _sections(model: type[BaseModel], path: str, heading: str, intro: str) -> Iterator[Section]:
    keys = [name for name in file_keys(model) if _table_of(model.model_fields[name]) is None]
    yield Section(heading=heading, intro=intro, model=model, keys=tuple(keys))
    for name in file_keys(model):
        field = model.model_fields[name]
        table = _table_of(field)
        if table is None:
            continue
        kind, inner = table
        dotted = f"{path}.{name}" if path else name
        shown = f"`[[{dotted}]]`" if kind == "array" else f"`[{dotted}]`"
        text = field.description or ""
        if kind == "globs":
            text += (
                f' Each entry is `"GLOB" = {{ key = value, ... }}` or a `[{dotted}."GLOB"]` '
                "table, with these keys:"
            )
        yield from _sections(inner, f'{dotted}."GLOB"' if kind == "globs" else dotted, shown, text)


def _table_of(field: FieldInfo) -> tuple[Literal["table", "array", "globs"], Any] | None:
    """How a field holds a model (a table, an array of tables, tables keyed by glob), or None."""
    annotation = without_none(field.annotation)
    args = get_args(annotation)
    if is_model(annotation):
        return "table", annotation
    if get_origin(annotation) is tuple and args and is_model(args[0]):
        return "array", args[0]
    if get_origin(annotation) is dict and len(args) == 2 and is_model(args[1]):
        return "globs", args[1]
    return None


def _section_text(section: Section) -> str:
    rows = [
        "| key | type | default | meaning |",
        "|---|---|---|---|",
        *(_row(name, section.model.model_fields[name]) for name in section.keys),
    ]
    return "\n\n".join([f"## {section.heading}", section.intro, "\n".join(rows)])


def _row(name: str, field: FieldInfo) -> str:
    cells = (f"`{name}`", type_text(field), default_text(field), meaning_text(field))
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def type_text(field: FieldInfo) -> str:
    """``number ≥ 0.01, finite``: the key's TOML type and the bounds pydantic checks."""
    bounds = _bounds(field)
    return ", ".join([_type_name(field), *([bounds] if bounds else []), *_limits(field)])


def _type_name(field: FieldInfo) -> str:
    annotation = without_none(field.annotation)
    values = _literal_values(field)
    if values:
        return "one of " + ", ".join(f"`{_toml(value)}`" for value in values)
    args = get_args(annotation)
    if get_origin(annotation) is tuple and args:
        return f"array of {_PLURALS[_TYPE_NAMES[args[0]]]}"
    if get_origin(annotation) is dict and len(args) == 2:
        return f"table of {_PLURALS[_TYPE_NAMES[args[1]]]}"
    return _TYPE_NAMES[annotation]


def _literal_values(field: FieldInfo) -> tuple[Any, ...]:
    choices = choices_of(field)
    if choices is not None:
        return choices.values
    annotation = without_none(field.annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _bounds(field: FieldInfo) -> str:
    """``≥ 0``, ``> 0`` or ``0 < x ≤ 1``: the range pydantic checks."""
    low: tuple[str, object] | None = None
    high: tuple[str, object] | None = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Gt):
            low = ("<", item.gt)
        elif isinstance(item, annotated_types.Ge):
            low = ("≤", item.ge)
        elif isinstance(item, annotated_types.Lt):
            high = ("<", item.lt)
        elif isinstance(item, annotated_types.Le):
            high = ("≤", item.le)
    if low and high:
        return f"{low[1]} {low[0]} x {high[0]} {high[1]}"
    if low:
        return f"{_FLIPPED[low[0]]} {low[1]}"
    return f"{high[0]} {high[1]}" if high else ""


def _limits(field: FieldInfo) -> list[str]:
    limits = []
    for item in field.metadata:
        if getattr(item, "allow_inf_nan", True) is False:
            limits.append("finite")
        if isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            limits.append("not empty")
        if isinstance(item, annotated_types.MaxLen):
            limits.append(f"at most {item.max_length} characters")
    return limits


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "not set" if value is None else f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    """A value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{key} = {_toml(item)}" for key, item in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def meaning_text(field: FieldInfo) -> str:
    """The description, then what each value of a closed set means, one per line."""
    choices = choices_of(field)
    lines = [field.description or ""]
    if choices is not None:
        lines += [f"`{_toml(value)}`: {meaning}" for value, meaning in choices.meanings]
    return "<br>".join(lines)


def _anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
