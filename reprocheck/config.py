"""reprocheck.toml / ``[tool.reprocheck]`` -> :class:`RunConfig`, validated once at the edge.

The schema is a set of frozen pydantic models with ``extra="forbid"``: pydantic gives
precise locations for every mistake, which we turn into one line naming the file and the
field. Stages downstream trust the validated value.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reprocheck.errors import ConfigError

CONFIG_NAMES = ("reprocheck.toml", "pyproject.toml")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BYTES_RE = re.compile(r"^[0-9]+(?:[bkmg]|[kmg]b)?$", re.IGNORECASE)  # what Docker accepts


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


class EnvironmentConfig(_Model):
    name: str
    image: str
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
    cpus: float | None = None
    pids_limit: int = 4096
    timeout: float = Field(default=3600.0, gt=0)
    network: Literal["none", "bridge", "host"] = "none"
    user: str | None = None
    read_only: bool = True
    repeat: int = Field(default=1, ge=1)
    jobs: int = Field(default=1, ge=1)  # environments run at the same time
    shm_size: str = "1g"

    @field_validator("memory", "shm_size")
    @classmethod
    def _byte_size(cls, value: str) -> str:
        if not _BYTES_RE.match(value):
            raise ValueError(f"{value!r} is not a size: use a whole number with b, k, m or g")
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
    kind: Literal["argmax", "labels", "boxes"]
    iou: float = Field(default=0.5, gt=0, le=1)


DecisionEntry = Annotated[
    DecisionConfig | Literal["argmax", "labels", "boxes"], Field(union_mode="left_to_right")
]


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
    decisions: dict[str, DecisionEntry] = Field(default_factory=dict)
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
        raise ConfigError(_describe(source, exc)) from exc


def _describe(source: Path, exc: ValidationError) -> str:
    """One line: the file, the dotted field and what to do."""
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-"))
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}' (check the spelling; see README for the keys)"
    if first["type"] == "missing":
        return f"{source}: missing required key '{loc}'"
    message = first["msg"].removeprefix("Value error, ")
    return f"{source}: field '{loc}': {message}"
