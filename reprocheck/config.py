"""reprocheck.toml / ``[tool.reprocheck]`` -> :class:`RunConfig`, validated once at the edge.

The schema is a set of frozen pydantic models with ``extra="forbid"``: pydantic gives
precise locations for every mistake, which we turn into one line naming the file and the
field. Stages downstream trust the validated value.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from reprocheck.errors import ConfigError

CONFIG_NAMES = ("reprocheck.toml", "pyproject.toml")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BYTES_RE = re.compile(r"([0-9]+)(b|[kmg]b?)?", re.IGNORECASE)  # what Docker accepts
_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MIN_BYTES = {"memory": 6 * 1024**2, "shm_size": 1}  # 6m: Docker refuses a smaller memory limit

# An image reference, after the distribution reference grammar (distribution/reference):
# [domain[:port]/]path-component[/path-component...][:tag][@algorithm:hex]
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::[\w][\w.-]{{0,127}})?(?:@{_DIGEST})?"
)
_NAME_MAX = 255  # characters in a reference's name (without tag and digest), as Docker limits
_REFERENCE_EXAMPLE = '"debian:bookworm"'
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_FOLDERS = 8  # folder names listed in an error's fix before "..."
# pydantic error types whose message names the allowed values or range but not the input
_SHOWS_NO_INPUT = frozenset(
    {"literal_error", "finite_number", "string_too_short"}
    | {f"{side}_than{eq}" for side in ("greater", "less") for eq in ("", "_equal")}
)

DecisionKind = Literal["argmax", "labels", "boxes"]


class _FieldError(ValueError):
    """A check made on a whole model that blames one field inside it, with a fix."""

    def __init__(self, loc: tuple[str | int, ...], message: str, fix: str = "") -> None:
        super().__init__(message)
        self.loc = loc
        self.fix = fix


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineConfig(_Model):
    callable: str | None = None
    command: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> PipelineConfig:
        if (self.callable is None) == (self.command is None):
            raise ValueError("set exactly one of 'callable' or 'command'")
        if self.callable is not None and ":" not in self.callable:
            raise ValueError(
                "'callable' must look like 'path/to/file.py:function' or 'pkg.mod:function'"
            )
        return self


class FixturesConfig(_Model):
    path: str = "fixtures"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()


class OutputsConfig(_Model):
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    max_file_bytes: int = Field(default=2 * 1024**3, gt=0)
    # The largest inflated array an output may hold, checked from its npy header before a
    # byte of it is read (an .npz of a few KB can inflate to many GB).
    max_array_bytes: int = Field(default=512 * 1024**2, gt=0)


class EnvironmentConfig(_Model):
    name: str
    image: str = Field(min_length=1)  # a folder with a Dockerfile, or an image reference
    env: dict[str, str] = Field(default_factory=dict)
    platform: str | None = None
    python: str = "python3"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return value


class CompareConfig(_Model):
    mode: Literal["baseline", "all-pairs"] = "baseline"


class RunSettings(_Model):
    """Container limits and behaviour; defaults sized for real pipelines, not the demo."""

    engine: str = "docker"
    memory: str = "16g"
    cpus: float | None = Field(default=None, ge=0.01, allow_inf_nan=False)  # Docker's minimum
    pids_limit: int = 4096
    timeout: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    network: Literal["none", "bridge", "host"] = "none"
    user: str | None = None
    read_only: bool = True
    repeat: int = Field(default=1, ge=1)
    # Environments run at the same time; None: as many as the host has cores.
    jobs: int | None = Field(default=None, ge=1)
    shm_size: str = "1g"

    @field_validator("memory", "shm_size")
    @classmethod
    def _byte_size(cls, value: str, info: ValidationInfo) -> str:
        least = _MIN_BYTES[info.field_name or ""]
        if size_bytes(value) < least:
            if least == 1:
                raise ValueError(f"{value!r} is 0 bytes: give a positive size like '1g'")
            raise ValueError(f"{value!r} is less than Docker's minimum of {least // 1024**2}m")
        return value

    @field_validator("pids_limit")
    @classmethod
    def _positive_pids(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"{value} is not a limit: use a positive number; there is no 'unlimited'"
            )
        return value


class ImagesConfig(_Model):
    ca_bundle: str | None = None
    bootstrap: Literal["auto", "never"] = "auto"
    mirror: str = "http://deb.debian.org/debian"


class ToleranceConfig(_Model):
    atol: float = Field(default=0.0, ge=0)
    rtol: float = Field(default=0.0, ge=0)
    ulp: int | None = Field(default=None, ge=0)
    max_mismatch_fraction: float = Field(default=0.0, ge=0, le=1)
    match: Literal["elements", "rows"] = "elements"


class DecisionConfig(_Model):
    """A ``[decisions]`` entry: ``"argmax"`` is short for ``{ kind = "argmax" }``."""

    kind: DecisionKind
    iou: float = Field(default=0.5, gt=0, le=1)  # boxes: the overlap that makes the same box

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"kind": data}
        if not isinstance(data, dict | DecisionConfig):
            kinds = _choices(DecisionKind)
            raise ValueError(
                f'use a kind ({kinds}) or a table like {{ kind = "boxes", iou = 0.5 }}'
            )
        return data

    @model_validator(mode="after")
    def _iou_for_boxes(self) -> DecisionConfig:
        if "iou" in self.model_fields_set and self.kind != "boxes":
            raise ValueError(f"'iou' applies to kind 'boxes' only, not {self.kind!r}")
        return self


class RunConfig(_Model):
    """The whole validated configuration; paths are resolved against ``root``."""

    root: Path
    source: Path
    pipeline: PipelineConfig
    fixtures: FixturesConfig = FixturesConfig()
    outputs: OutputsConfig = OutputsConfig()
    environments: tuple[EnvironmentConfig, ...]
    compare: CompareConfig = CompareConfig()
    run: RunSettings = RunSettings()
    images: ImagesConfig = ImagesConfig()
    tolerance: dict[str, ToleranceConfig] = Field(default_factory=dict)
    decisions: dict[str, DecisionConfig] = Field(default_factory=dict)
    reports: str = "reports"
    baselines: str = "baselines"
    history: str = "reports/history"

    @field_validator("environments")
    @classmethod
    def _unique_names(cls, value: tuple[EnvironmentConfig, ...]) -> tuple[EnvironmentConfig, ...]:
        if not value:
            raise ValueError("declare at least one [[environments]] table")
        names = [env.name for env in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"environment names must be unique; repeated: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _images_exist(self) -> RunConfig:
        for index, env in enumerate(self.environments):
            problem = image_problem(self.root, env.image)
            if problem:
                raise _FieldError(("environments", index, "image"), *problem)
        return self

    def dockerfile_folder(self, env: EnvironmentConfig) -> Path | None:
        """The build folder when ``env.image`` names a folder, else None (an image reference).

        The same rule the config was validated with; checked again, since files change."""
        problem = image_problem(self.root, env.image)
        if problem:
            message, fix = problem
            where = f"{self.source}: environment {env.name!r}"
            raise ConfigError(_one_line(f"{where}: {message}"), fix=_one_line(fix))
        return image_folder(self.root, env.image)

    @property
    def fixtures_dir(self) -> Path:
        return (self.root / self.fixtures.path).resolve()

    @property
    def reports_dir(self) -> Path:
        return (self.root / self.reports).resolve()

    def environment(self, name: str) -> EnvironmentConfig:
        for env in self.environments:
            if env.name == name:
                return env
        known = ", ".join(e.name for e in self.environments)
        raise ConfigError(f"{self.source}: no environment named {name!r}", fix=f"known: {known}")


def size_bytes(text: str) -> int:
    """The bytes a Docker size means (``"512m"``, ``"2g"``, ``"1024"``); ValueError if none."""
    match = _BYTES_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: use a whole number with b, k, m or g")
    return int(match[1]) * _UNITS[(match[2] or "b")[0].lower()]


def image_folder(root: Path, image: str) -> Path | None:
    """The folder ``image`` names when it looks like a path, else None (an image reference).

    A path starts with '.', '/' or '~', or names a folder under ``root``, or starts with one
    ("images/debian-trixy" when ``root/images`` exists): a typo there is not a registry name.
    """
    if image.startswith((".", "/", "~")) or _is_dir(root / image.split("/", 1)[0]):
        return _absolute(root, image)
    return None


def image_problem(root: Path, image: str) -> tuple[str, str] | None:
    """What is wrong with an environment's ``image`` (message, fix), or None."""
    folder = image_folder(root, image)
    if folder is None:
        reference = _REFERENCE_RE.fullmatch(image)
        if reference and len(reference["name"]) <= _NAME_MAX:
            return None
        return (
            f"{image!r} is neither an existing folder nor a valid image reference",
            f"a folder with a Dockerfile must exist under {root}; an image reference is "
            f'lowercase, like {_REFERENCE_EXAMPLE} or "ghcr.io/org/image:tag"',
        )
    if not _is_dir(folder):
        return f"no folder {folder} to build from", _missing_folder_fix(folder, image)
    if not _is_file(folder / "Dockerfile"):
        return f"folder {folder} has no Dockerfile", _no_dockerfile_fix(folder)
    return None


def _absolute(root: Path, image: str) -> Path:
    try:
        return (root / Path(image).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError):  # an unknown ~user, a link loop, a NUL
        return root / image


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long for the file system is no folder
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _missing_folder_fix(folder: Path, image: str) -> str:
    known = _subfolders(folder.parent)
    if not known:
        return (
            "give an existing folder with a Dockerfile; an image reference is lowercase, "
            f"like {_REFERENCE_EXAMPLE}"
        )
    close = difflib.get_close_matches(folder.name.lower(), known, n=1)
    guess = f"did you mean {str(Path(image).parent / close[0])!r}? " if close else ""
    return f"{guess}folders in {folder.parent}: {_listing(known)}"


def _no_dockerfile_fix(folder: Path) -> str:
    known = [name for name in _subfolders(folder) if _is_file(folder / name / "Dockerfile")]
    if known:
        return f"folders with a Dockerfile in it: {_listing(known)}"
    return (
        "add a Dockerfile; for a registry image, write its full reference, "
        'like "docker.io/library/debian:bookworm"'
    )


def _subfolders(parent: Path) -> list[str]:
    """The visible folders in ``parent`` (not .git, .venv), sorted."""
    try:
        names = (path.name for path in parent.iterdir() if _is_dir(path))
        return sorted(name for name in names if not name.startswith("."))
    except OSError:  # absent or unreadable: nothing to suggest
        return []


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN_FOLDERS])
    return shown + ", ..." if len(names) > _SHOWN_FOLDERS else shown


def _choices(literal: Any) -> str:
    """``'a', 'b' or 'c'``: the values of a Literal, as pydantic lists them."""
    quoted = [repr(value) for value in get_args(literal)]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def find_config(start: Path) -> Path:
    """The config file in ``start`` or a parent: reprocheck.toml, else pyproject with the table."""
    for folder in (start, *start.parents):
        for name in CONFIG_NAMES:
            candidate = folder / name
            if candidate.is_file() and _has_table(candidate):
                return candidate
    raise ConfigError(
        f"no reprocheck.toml (or [tool.reprocheck] in pyproject.toml) in {start} or its parents",
        fix="create one or pass --config PATH",
    )


def _has_table(path: Path) -> bool:
    if path.name != "pyproject.toml":
        return True
    return "reprocheck" in _read_toml(path).get("tool", {})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", fix="fix the syntax") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def load_config(path: Path | None = None) -> RunConfig:
    """Read and validate the configuration at ``path`` (or found from the current folder)."""
    source = (path or find_config(Path.cwd())).resolve()
    if not source.is_file():
        raise ConfigError(f"config file {source} does not exist", fix="pass an existing --config")
    data = _read_toml(source)
    if source.name == "pyproject.toml":
        data = data.get("tool", {}).get("reprocheck", {})
    try:
        return RunConfig.model_validate({**data, "root": source.parent, "source": source})
    except ValidationError as exc:
        raise _describe(source, exc) from exc


def _one_line(text: str) -> str:
    """``text`` with control characters (a newline in a TOML key or path) escaped."""
    return _CONTROL_RE.sub(lambda found: repr(found[0])[1:-1], text)


def _describe(source: Path, exc: ValidationError) -> ConfigError:
    """One line: the file, the dotted field and what to do."""
    first = exc.errors()[0]
    loc = _dotted(first)
    if first["type"] == "extra_forbidden":
        return ConfigError(
            _one_line(f"{source}: unknown key '{loc}'"),
            fix="check the spelling; see README for the keys",
        )
    if first["type"] == "missing":
        return ConfigError(_one_line(f"{source}: missing required key '{loc}'"))
    fix = getattr(first.get("ctx", {}).get("error"), "fix", "")
    message = first["msg"].removeprefix("Value error, ") + _got(first)
    return ConfigError(_one_line(f"{source}: field '{loc}': {message}"), fix=_one_line(fix))


def _dotted(error: ErrorDetails) -> str:
    """``run.memory``: pydantic's location, plus the field a whole-model check blames."""
    parts = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):
        parts += [str(part) for part in cause.loc]
    return ".".join(parts)


def _got(error: ErrorDetails) -> str:
    """``, got 0``: the value given, after the messages of pydantic's that do not show it."""
    value = error["input"]
    if error["type"] not in _SHOWS_NO_INPUT or not isinstance(value, str | int | float):
        return ""
    shown = repr(value)
    return f", got {shown}" if len(shown) <= 40 else ""
