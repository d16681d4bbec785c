"""reprocheck.toml / ``[tool.reprocheck]`` -> :class:`RunConfig`, validated once at the edge.

The schema is a set of frozen pydantic models with ``extra="forbid"``: pydantic gives
precise locations for every mistake, which we turn into one line naming the file and the
field. Stages downstream trust the validated value.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from reprocheck.compose import ComposeService, is_compose, load_service
from reprocheck.errors import ConfigError

# explain's experiments per drifting pair by default: the likely transplants and every knob
# of a cross-release pair take about 16, the combinations after them a few more.
EXPLAIN_MAX_EXPERIMENTS = 24

CONFIG_NAMES = ("reprocheck.toml", "pyproject.toml")
INJECTED_KEYS = ("root", "source")  # RunConfig fields load_config sets; not keys of the file
_REFERENCE = "docs/config.md"
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")  # a TOML key that needs no quotes
_SHOWN_CHARS = 40  # a value longer than this is cut short in an error
# pydantic error types of a value that should have been a table
_NOT_A_TABLE = frozenset({"model_type", "model_attributes_type", "dict_type"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOST_SCHEMES = ("ssh://", "tcp://", "unix://")
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
    {"literal_error", "finite_number", "string_too_short", "string_too_long"}
    | {f"{side}_than{eq}" for side in ("greater", "less") for eq in ("", "_equal")}
)


@dataclass(frozen=True)
class Choices:
    """A closed set of values: what one is called in an error and what each value means.

    Carried in the ``Annotated`` metadata of a ``Literal`` key, so that the error a wrong value
    gives and the reference in docs/config.md both come from here."""

    noun: str  # with its article: "a decision kind"
    meanings: tuple[tuple[str, str], ...]  # (value, what it means), in the Literal's order

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(value for value, _meaning in self.meanings)

    def refusal(self, value: object) -> str:
        """``"softmax" is not a decision kind; use one of argmax, labels, boxes``."""
        return f"{shown_value(value)} is not {self.noun}; use one of {', '.join(self.values)}"


def choices_of(field: FieldInfo) -> Choices | None:
    """The :class:`Choices` a field's annotation carries (also inside ``X | None``), or None."""
    found = next((item for item in field.metadata if isinstance(item, Choices)), None)
    if found is not None:
        return found
    inner = without_none(field.annotation)
    extra = getattr(inner, "__metadata__", ())  # Annotated[Literal[...], Choices] | None
    return next((item for item in extra if isinstance(item, Choices)), None)


def shown_value(value: object) -> str:
    """A value as TOML writes it (``"softmax"``, ``true``, ``3``), a long string cut short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        cut = value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 3] + "..."
        return json.dumps(cut, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    return "an array" if isinstance(value, list | tuple) else f"a {type(value).__name__}"


_DECISION_KINDS = Choices(
    "a decision kind",
    (
        (
            "argmax",
            "the output holds class scores (logits or probabilities) along its last axis; each "
            "row's top class is one decision. Reports how many rows' top class changed and the "
            "smallest top-1 minus top-2 margin in the baseline (how close the nearest flip was). "
            "Both sides need the same shape.",
        ),
        (
            "labels",
            "the output already holds discrete decisions (class ids, a segmentation mask, "
            "thresholded flags); every element is one decision and every changed element counts. "
            "Both sides need the same shape.",
        ),
        (
            "boxes",
            "the output is an N x (4 or more) array of detections, one row per box, columns "
            "`x, y, w, h` (top-left corner, width, height) then anything else (score, class); "
            "baseline and candidate boxes are paired greedily by IoU >= `iou`. Reports boxes "
            "that appeared (candidate only), vanished (baseline only) and moved (paired, with "
            "different coordinates); the box counts may differ.",
        ),
    ),
)
DecisionKind = Annotated[Literal["argmax", "labels", "boxes"], _DECISION_KINDS]
CompareMode = Annotated[
    Literal["baseline", "all-pairs"],
    Choices(
        "a compare mode",
        (
            (
                "baseline",
                "the first `[[environments]]` table is the baseline; every other environment is "
                "compared with it (N - 1 pairs).",
            ),
            (
                "all-pairs",
                "every environment is compared with every other (N x (N - 1) / 2 pairs), when "
                "no environment is the reference.",
            ),
        ),
    ),
]
NewOutputs = Annotated[
    Literal["pass", "fail"],
    Choices(
        "a setting for new outputs",
        (
            ("pass", "it is reported with verdict `new` and does not fail the run."),
            (
                "fail",
                "it is reported with verdict `new` and fails the run (exit 1), as drift does.",
            ),
        ),
    ),
]
Network = Annotated[
    Literal["none", "bridge", "host"],
    Choices(
        "a network mode",
        (
            (
                "none",
                "no network at all: weights, datasets and packages must be in the image or the "
                "project, a download at run time fails.",
            ),
            ("bridge", "Docker's default NAT network: outbound access as the host has it."),
            ("host", "the host's own network stack, unisolated."),
        ),
    ),
]
Bootstrap = Annotated[
    Literal["auto", "never"],
    Choices(
        "a bootstrap setting",
        (
            (
                "auto",
                "a missing `debian:SUITE` base image (bullseye, bookworm, trixie, forky, sid; an "
                "environment's `image` or a `FROM` in its Dockerfile) that cannot be pulled is "
                "built from the Debian archive with debootstrap (from `mirror`; debootstrap must "
                "be installed on the host).",
            ),
            ("never", "such an image is an error: pull, build or `docker load` it yourself."),
        ),
    ),
]
EngineKind = Annotated[
    Literal["docker", "podman"],
    Choices(
        "an engine",
        (
            (
                "docker",
                "a Docker Engine: `host` or `context` when set, else `DOCKER_HOST`, else the "
                "local socket.",
            ),
            (
                "podman",
                "Podman through its Docker-compatible API (`podman system service`): `host` "
                "when set, else `/run/podman/podman.sock` as root or "
                "`$XDG_RUNTIME_DIR/podman/podman.sock` rootless.",
            ),
        ),
    ),
]
Match = Annotated[
    Literal["elements", "rows"],
    Choices(
        "a match mode",
        (
            (
                "elements",
                "element by element at the same index; a different shape or dtype kind is "
                "verdict `incomparable`.",
            ),
            (
                "rows",
                "the output is an unordered set of rows (1-D: each value; 2-D: each row, e.g. "
                "keypoints `x, y, ...` or detections): each baseline row is paired with the "
                "nearest candidate row whose largest column difference is <= `atol`, the pairs "
                "are then compared element-wise, and a row left without a partner is drift. "
                "The row counts may differ.",
            ),
        ),
    ),
]


class _FieldError(ValueError):
    """A check made on a whole model that blames one field inside it, with a fix."""

    def __init__(self, loc: tuple[str | int, ...], message: str, fix: str = "") -> None:
        super().__init__(message)
        self.loc = loc
        self.fix = fix


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineConfig(_Model):
    """``[pipeline]``: what runs in every environment; exactly one of its two keys."""

    callable: str | None = Field(
        default=None,
        description=(
            'A Python function run once per fixture: `"path/to/file.py:function"` (relative to '
            'the folder of the config file) or `"package.module:function"` (importable from '
            "that folder). The module is imported once per environment. The function is called "
            "as `function(path: str)` with the absolute path of one fixture file inside the "
            "container (`/fixtures/<fixture path>`), with `random` and `numpy.random` seeded "
            "with 0 before each call, and returns a `dict` of output name -> a numpy array or "
            "anything `numpy.asarray` makes numeric (a number, a bool, a list); nested dicts "
            "give slash-separated names. Each output is stored as `<fixture path>/<name>`. A "
            "string or object value, or an exception (or `sys.exit`) in the function, is that "
            "fixture's error; the other fixtures still run."
        ),
    )
    command: tuple[str, ...] | None = Field(
        default=None,
        description=(
            'A program run once per environment, as an argument list (no shell: use `["sh", '
            '"-c", "..."]` for one), in the project folder (`/project`, read-only). '
            "`{inputs}` in an argument becomes the fixtures folder and `{outputs}` the folder "
            "to write outputs into; no other braces are touched. Outputs: arrays in `.npz` files "
            "(`<file without .npz>/<key>`), `.npy` files (`<file without .npy>`) and numbers in "
            "`.json` objects (`<file without .json>/<key>`, `<key>/<key>` for nested objects; "
            "lists of numbers are arrays; `3` and `3.0` are one number, null is NaN). A non-zero "
            "exit status is that environment's error."
        ),
    )

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
    """``[fixtures]``: the input files every environment gets."""

    path: str = Field(
        default="fixtures",
        description=(
            "The folder of input files, relative to the config file; mounted read-only at "
            "`/fixtures` in every container. Every file under it, at any depth, is a fixture, "
            "named by its path relative to this folder (`cats/01.jpg`)."
        ),
    )
    include: tuple[str, ...] = Field(
        default=("*",),
        description=(
            "Globs over fixture names; a file is a fixture when it matches one of them and no "
            "`exclude` glob. Matching is case-sensitive and `*` also matches `/` "
            '(`"*.jpg"` takes `cats/01.jpg`). A `command` pipeline sees the whole folder.'
        ),
    )
    exclude: tuple[str, ...] = Field(
        default=(), description="Globs over fixture names to leave out, as for `include`."
    )


class OutputsConfig(_Model):
    """``[outputs]``: which outputs are compared, and the size limits that keep the host safe."""

    include: tuple[str, ...] = Field(
        default=("*",),
        description=(
            "Globs over output names (`<fixture path>/<key>`, e.g. "
            "`cats/01.jpg/dnn/probabilities`); only outputs matching one of them and no "
            "`exclude` glob are read and compared, the others are ignored. Case-sensitive; "
            "`*` also matches `/`."
        ),
    )
    exclude: tuple[str, ...] = Field(
        default=(), description="Globs over output names to ignore, as for `include`."
    )
    max_file_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description=(
            "The largest output file reprocheck reads, in bytes (default 2 GiB). A larger file "
            "is not read: its outputs get verdict `error` and the run exits 2. Raise it for "
            "pipelines that write big archives; TOML takes `4_294_967_296`."
        ),
    )
    # The largest inflated array an output may hold, checked from its npy header before a
    # byte of it is read (an .npz of a few KB can inflate to many GB).
    max_array_bytes: int = Field(
        default=512 * 1024**2,
        gt=0,
        description=(
            "The largest array one output may hold once decompressed, in bytes (elements x "
            "item size; default 512 MiB). It is checked from the array's header before any of "
            "it is read, since a compressed `.npz` of a few KB can inflate to many GB; a larger "
            "array gets verdict `error` (exit 2). A 4096 x 4096 x 3 float32 image is 192 MiB."
        ),
    )


class EnvironmentConfig(_Model):
    """``[[environments]]``: one OS image to run the pipeline in."""

    name: str = Field(
        description=(
            "The environment's name in reports, folders and `--env`: letters, digits, `.`, `_` "
            'and `-`, unique. With `[compare] mode = "baseline"` the first environment is the '
            "baseline."
        ),
    )
    image: str = Field(
        min_length=1,
        description=(
            'A folder with a Dockerfile, relative to the config file (`"images/debian-'
            'bookworm"`; built, and rebuilt when a file in it changes), an image reference '
            '(`"debian:bookworm"`, `"ghcr.io/org/image:tag"`; pulled when missing), or a '
            'compose service (`"compose:docker-compose.yml#inference"`, the file relative to '
            "the config file: its build context, Dockerfile and build args are built like a "
            "folder, or its `image` is used; its `environment` goes under `env`). Results "
            "record the image ID, so a moved tag shows."
        ),
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Environment variables set in the container, e.g. `{ OMP_NUM_THREADS = "1" }`; '
            "values are strings. They override reprocheck's own (`PYTHONHASHSEED=0`, "
            "`HOME=/tmp`, ...) and, for a compose service, the service's `environment`."
        ),
    )
    platform: str | None = Field(
        default=None,
        description=(
            'The platform to build, pull and run the image for, as Docker names it: `"linux/'
            'arm64"`, `"linux/amd64"`, `"linux/arm/v7"`. Not set: a compose service\'s '
            "`platform`, else the host's own. Another "
            "architecture runs emulated (install `qemu-user-static` and `binfmt-support` on the "
            "host), about ten times slower for numeric work, and shows what its own builds "
            "change (FMA contraction, NEON code paths)."
        ),
    )
    cpu: str = Field(
        default="native",
        description=(
            'The CPU model the pipeline computes as: `"native"` (this host\'s), a psABI level '
            '(`"x86-64-v2"`, `"x86-64-v3"`: qemu\'s Nehalem and Haswell models) or any model '
            "`qemu-x86_64-static -cpu help` (`qemu-aarch64-static` for arm64) lists "
            '(`"Skylake-Client"`, `"cortex-a53"`). Not native: the pipeline runs under '
            "qemu-user in the same container (install `qemu-user-static`), bit-exact as on that "
            "CPU and 5-13x slower. AVX2 models (`x86-64-v3`, Haswell and later) need qemu 8.0 "
            "or later. `x86-64-v4` (AVX-512) cannot be emulated."
        ),
    )
    host: str | None = Field(
        default=None,
        description=(
            "Where this environment's containers run: `\"ssh://user@box\"` (the host's "
            'Docker over ssh; `~/.ssh/config` applies), `"tcp://box:2376"` (TLS with the '
            'certificates in `$DOCKER_CERT_PATH`), `"unix:///path/docker.sock"`. Not set: '
            "`context`, else the local engine. Any host but a local socket gets the pipeline "
            "and fixtures copied in through the engine API (into volumes named by their "
            "content, reused while nothing changed) and its image through `[images] "
            "registry`, pulled by digest."
        ),
    )
    context: str | None = Field(
        default=None,
        description=(
            "A Docker context (`docker context ls`) to run this environment's containers "
            "on, instead of `host`."
        ),
    )
    engine: EngineKind | None = Field(
        default=None, description="This environment's container engine; not set: `[run] engine`."
    )
    shards: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "Split this environment's fixtures across this many containers (a callable "
            "pipeline only); not set: `[run] shards`."
        ),
    )
    hosts: tuple[str, ...] = Field(
        default=(),
        description=(
            "Hosts (as `host`) the shards are spread over, shard k on host k mod len(hosts); "
            "empty: all on `host`."
        ),
    )
    python: str = Field(
        default="python3",
        description=(
            "The interpreter in the image that runs reprocheck's harness, and with it a "
            'callable pipeline: a command on the image\'s PATH (`"python3.11"`) or an absolute '
            'path (`"/opt/venv/bin/python"`, `"/opt/conda/bin/python"`). It needs Python >= 3.9 '
            "and numpy. A `command` pipeline is started by the harness and picks its own."
        ),
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return value

    @field_validator("env")
    @classmethod
    def _valid_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"{name!r} is no variable name (not empty, no '=', no NUL)")
            if "\0" in text:
                raise ValueError(f"the value of {name} holds a NUL character, which no process "
                                 "environment can carry")  # fmt: skip
        return value

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str | None) -> str | None:
        return None if value is None else _engine_host(value)

    @field_validator("hosts")
    @classmethod
    def _valid_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_engine_host(host) for host in value)

    @model_validator(mode="after")
    def _one_place(self) -> EnvironmentConfig:
        if self.host is not None and self.context is not None:
            raise ValueError("set either host or context, not both")
        return self


class CompareConfig(_Model):
    """``[compare]``: which environments are compared with which, and what fails a run."""

    mode: CompareMode = Field(default="baseline", description="Which pairs are compared.")
    cpus: tuple[str, ...] = Field(
        default=(),
        description=(
            'CPU models to run every native environment as, besides itself: `["x86-64-v3", '
            '"x86-64-v2"]` adds `bookworm@x86-64-v3` and `bookworm@x86-64-v2` next to '
            '`bookworm` (see `cpu` of an environment; `"native"` in the list is the '
            "environment itself). `reprocheck run --cpus native,x86-64-v3` sets it for one run."
        ),
    )
    new_outputs: NewOutputs = Field(
        default="pass",
        description=(
            "What happens to an output present in the candidate but absent from the baseline "
            "(in `all-pairs`, the first environment of the pair; with `--baseline NAME`, the "
            "stored run). An output absent from the candidate is always `missing`, which fails."
        ),
    )


class RunSettings(_Model):
    """Container limits and behaviour; defaults sized for real pipelines, not the demo."""

    engine: EngineKind = Field(
        default="docker",
        description=(
            "The container engine of environments that name none. Images are built on the "
            "local Docker engine either way; environments on any other engine get them "
            "through `[images] registry`, by digest."
        ),
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=256,
        description=(
            "Split each environment's fixtures across this many containers, run in parallel "
            "(a callable pipeline only); the merged result is what one container gives. A "
            "failed shard is retried once, then its fixtures are reported failed."
        ),
    )
    memory: str = Field(
        default="16g",
        description=(
            "Memory limit of each container, as a Docker size: a whole number with `b`, `k`, `m` "
            'or `g` (powers of 1024), `"512m"`, `"16g"`; at least `"6m"`. No swap beyond it. A '
            "pipeline that exceeds it is killed and the environment's status says out of memory."
        ),
    )
    cpus: float | None = Field(
        default=None,
        ge=0.01,
        allow_inf_nan=False,
        description=(
            "CPU time each container may use, in cores (`2.0`, `0.5`); at least 0.01. Not set: "
            "no limit. It limits time, not the cores a thread pool sees: set `OMP_NUM_THREADS` "
            "and the like in `env` to change the threads."
        ),
    )
    pids_limit: int = Field(
        default=4096,
        description=(
            "The most processes and threads a container may have at once (at least 1; there is "
            "no unlimited). Raise it when a pipeline starts many workers with many threads each."
        ),
    )
    timeout: float = Field(
        default=3600.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Seconds one run of an environment may take (each `repeat` on its own, image builds "
            "not counted). The harness in the container stops the pipeline at the deadline "
            "(status `timeout`), so a container ends on time even if reprocheck was killed."
        ),
    )
    network: Network = Field(default="none", description="The containers' network.")
    user: str | None = Field(
        default=None,
        description=(
            'The user the containers run as: `"UID:GID"` or a user name known in the image. Not '
            'set: your own UID:GID, or nobody (`"65534:65534"`) when reprocheck runs as root. '
            "It must be able to read the project and fixtures folders."
        ),
    )
    read_only: bool = Field(
        default=True,
        description=(
            "Whether the container's root file system is read-only. The pipeline can always "
            "write to `/tmp` (a 2 GiB tmpfs) and its outputs folder; `false` lets it write "
            "elsewhere too (thrown away with the container)."
        ),
    )
    repeat: int = Field(
        default=1,
        ge=1,
        description=(
            "How many times each environment runs, each in a fresh container. With 2 or more, "
            "an output that differs between runs of one environment gets verdict "
            "`nondeterministic` (with how much it varies) instead of being counted as drift: "
            "the noise floor of threaded reductions, GPU-like kernels or unseeded randomness."
        ),
    )
    # Environments run at the same time; None: as many as the host has cores.
    jobs: int | None = Field(
        default=None,
        ge=1,
        description=(
            "How many environments run at the same time (each builds its image, then runs its "
            "containers); at least 1. Not set: one per CPU core of the host. `reprocheck run "
            "--jobs N` overrides it. Each container may take `memory`, so `jobs x memory` "
            "should fit in the host's RAM; with `jobs` > 1 the environments also compete for "
            "the cores, which makes timings, not results, differ."
        ),
    )
    shm_size: str = Field(
        default="1g",
        description=(
            'Size of `/dev/shm` in each container, as a Docker size (`"2g"`, `"512m"`). PyTorch '
            "DataLoader workers and other multiprocessing pass arrays through it and fail with "
            '"bus error" or "No space left on device" when it is too small (Docker\'s own '
            "default is 64m). What is stored there counts toward `memory`."
        ),
    )

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
    """``[images]``: how missing images are built."""

    ca_bundle: str | None = Field(
        default=None,
        description=(
            "A PEM file of CA certificates, relative to the config file, given to image builds "
            "and mounted into containers (as `PIP_CERT` and `REQUESTS_CA_BUNDLE`): for a "
            "network behind a TLS-inspecting proxy. Not set: `$PIP_CERT`, "
            "`$REQUESTS_CA_BUNDLE` or `$SSL_CERT_FILE`, the first that names a file."
        ),
    )
    bootstrap: Bootstrap = Field(
        default="auto",
        description="What happens when a Debian base image is neither present nor pullable.",
    )
    registry: str | None = Field(
        default=None,
        description=(
            '`HOST[:PORT]/PREFIX` (`"127.0.0.1:5000/reprocheck"`): where `reprocheck images '
            "push` (and a run with a remote environment) pushes the environments' images; "
            "their digests go to `lock`, and remote engines pull them by digest."
        ),
    )
    lock: str = Field(
        default="reprocheck.lock.json",
        description=(
            "The lock file, relative to the config file, that records each pushed image's "
            "digest by environment and build-context digest; commit it with the project."
        ),
    )
    mirror: str = Field(
        default="http://deb.debian.org/debian",
        description=(
            "The Debian archive debootstrap downloads packages from when it builds a base "
            "image: a local mirror or caching proxy, or "
            '`"http://archive.debian.org/debian"` for a suite no longer on the main archive.'
        ),
    )

    @field_validator("registry")
    @classmethod
    def _valid_registry(cls, value: str | None) -> str | None:
        return None if value is None else registry_prefix(value)


class ToleranceConfig(_Model):
    """A ``[tolerance]`` entry: how far a candidate may be from the baseline and still agree."""

    atol: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Absolute tolerance, in the output's own units: an element agrees when "
            "`|candidate - baseline| <= atol + rtol * |baseline|`. The only tolerance integer "
            'and bool outputs take (they are exact otherwise). With `match = "rows"` it is '
            "also the largest column difference at which two rows pair."
        ),
    )
    rtol: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Relative tolerance, a fraction of the baseline's magnitude (`1e-5` allows 0.001% "
            "of `|baseline|`), added to `atol`. Floats only."
        ),
    )
    ulp: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Largest distance in units in the last place: how many representable values of the "
            "array's own dtype lie between the two (near 1.0, 1 ULP is 1.2e-7 in float32 and "
            "2.2e-16 in float64). An element agrees when it is within `ulp` or within "
            "`atol`/`rtol`. Not set: no ULP bound. Floats only."
        ),
    )
    max_mismatch_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description=(
            "The fraction (0 to 1) of an output's elements that may be outside tolerance while "
            "the output still has verdict `within_tolerance` instead of `drift`: `0.001` lets "
            "one element (a pixel's channel) in a thousand differ by any amount. The default 0 "
            "fails on a single element."
        ),
    )
    match: Match = Field(default="elements", description="How elements are paired.")


class DecisionConfig(_Model):
    """A ``[decisions]`` entry: ``"argmax"`` is short for ``{ kind = "argmax" }``."""

    kind: DecisionKind = Field(description="Which decision the output drives.")
    iou: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description=(
            "For `boxes` only: the intersection over union (above 0, at most 1) at which a "
            "candidate box counts as the same box as a baseline box."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in _DECISION_KINDS.values:
                raise ValueError(_DECISION_KINDS.refusal(data))
            return {"kind": data}
        if not isinstance(data, dict | DecisionConfig):
            raise ValueError(
                f'{_DECISION_KINDS.refusal(data)}, or a table like {{ kind = "boxes", iou = 0.5 }}'
            )
        return data

    @model_validator(mode="after")
    def _iou_for_boxes(self) -> DecisionConfig:
        if "iou" in self.model_fields_set and self.kind != "boxes":
            raise ValueError(f"'iou' applies to kind 'boxes' only, not {self.kind!r}")
        return self


class MetricConfig(_Model):
    """A ``[metrics]`` entry: a scalar metric compared in its own units, and how it is shown."""

    atol: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Absolute tolerance in the metric's own units, as the pipeline returns it (before "
            "`scale`): an accuracy of 0.912 against 0.915 differs by 0.003, and `atol = 0.005` "
            "accepts that. The metric agrees when `|candidate - baseline| <= atol + rtol * "
            "|baseline|`."
        ),
    )
    rtol: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Relative tolerance, a fraction of the baseline's value (`0.01`: 1% of a mean loss)."
        ),
    )
    unit: str = Field(
        default="",
        max_length=16,
        description=(
            'What the shown value is in, written after it in reports: `"%"`, `"pp"` (percentage '
            'points, for a difference of percentages), `"dB"`, `"ms"`. Empty: none.'
        ),
    )
    scale: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "What the value and its difference are multiplied by for display only: `100` with "
            '`unit = "%"` shows an accuracy of 0.912 as 91.2 %. Tolerances stay in the '
            "unscaled units."
        ),
    )

    @field_validator("unit")
    @classmethod
    def _printable(cls, value: str) -> str:
        if _CONTROL_RE.search(value):
            raise ValueError("use printable characters only")
        return value


class RunConfig(_Model):
    """The whole validated configuration; paths are resolved against ``root``."""

    root: Path = Field(
        description="The folder of the config file, set by load_config (not a key of the file)."
    )
    source: Path = Field(
        description="The config file itself, set by load_config (not a key of the file)."
    )
    pipeline: PipelineConfig = Field(
        description="What runs in every environment: set exactly one of `callable` or `command`."
    )
    fixtures: FixturesConfig = Field(
        default=FixturesConfig(), description="The input files every environment gets."
    )
    outputs: OutputsConfig = Field(
        default=OutputsConfig(),
        description=(
            "Which outputs are compared, and the size limits that keep a runaway or hostile "
            "pipeline from exhausting the host. Output files are never unpickled or followed "
            "through links."
        ),
    )
    environments: tuple[EnvironmentConfig, ...] = Field(
        description=(
            "The environments, one `[[environments]]` table each, in order; at least one, "
            "with unique names."
        ),
    )
    compare: CompareConfig = Field(
        default=CompareConfig(),
        description="Which environments are compared with which, and what fails a run.",
    )
    run: RunSettings = Field(
        default=RunSettings(),
        description=(
            "How the containers run: limits and isolation. The defaults are sized for real "
            "pipelines; every container also runs without capabilities, with "
            "`no-new-privileges`, as a non-root user."
        ),
    )
    images: ImagesConfig = Field(
        default=ImagesConfig(), description="How missing base images are built."
    )
    tolerance: dict[str, ToleranceConfig] = Field(
        default_factory=dict,
        description=(
            "How far an output may move and still agree. Each key is a glob over output names "
            '(quote it: `"*/probabilities"`), or `default` for the outputs no glob matches; when '
            "several globs match, the most specific wins (fewer wildcards, then more literal "
            "characters; the first written on a tie). Without a rule an output is exact: any "
            "element whose value changes is drift (NaN equals NaN, -0.0 equals +0.0)."
        ),
    )
    decisions: dict[str, DecisionConfig] = Field(
        default_factory=dict,
        description=(
            "Which outputs drive a downstream decision, keyed by output-name globs as in "
            '`[tolerance]`; a value is a kind (`"*/probabilities" = "argmax"`) or a table '
            '(`"*/detections" = { kind = "boxes", iou = 0.7 }`). Reports say how many decisions '
            "changed, summed per output key across fixtures, next to the verdict; a decision "
            "never changes the verdict."
        ),
    )
    metrics: dict[str, MetricConfig] = Field(
        default_factory=dict,
        description=(
            "Scalar metrics (an accuracy, a mean loss, a PSNR: a single number the pipeline "
            "returns, a 0-d array or a number in a `.json` file), keyed by output-name globs "
            "as in `[tolerance]`. A metric is compared in its own units with its own "
            "tolerance, instead of the `[tolerance]` rules, and shown with its unit."
        ),
    )
    reports: str = Field(
        default="reports",
        description=(
            "The folder, relative to the config file, where every run is stored as "
            "`<run-id>/` (`report.json`, `report.html`, the outputs, ...), with `latest` "
            "pointing at the newest and `.cache/` holding cached results and `explain` "
            "experiments. Containers cannot see it."
        ),
    )
    baselines: str = Field(
        default="baselines",
        description=(
            "The folder, relative to the config file, where `reprocheck baseline save NAME` "
            "stores named golden runs (`<baselines>/NAME`) that `reprocheck run --baseline "
            "NAME` compares with. Containers cannot see it."
        ),
    )
    history: str = Field(
        default="reports/history",
        description=(
            "Where the drift history is kept, relative to the config file and without suffix: "
            "`.parquet` is added. A folder with one Parquet file per run (pandas reads it as "
            "one table): every run adds its verdicts; `reprocheck history` reads each file's "
            "line. Containers cannot see its folder."
        ),
    )

    @field_validator("environments")
    @classmethod
    def _compose_settings(
        cls, value: tuple[EnvironmentConfig, ...], info: ValidationInfo
    ) -> tuple[EnvironmentConfig, ...]:
        """A compose service's ``environment`` (under the environment's own ``env``) and
        ``platform`` (unless the environment sets one), read once, here."""
        root = info.data.get("root")
        if not isinstance(root, Path):
            return value
        return tuple(_with_compose(root, index, env) for index, env in enumerate(value))

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
            if is_compose(env.image):
                continue  # read and checked by _compose_settings
            problem = image_problem(self.root, env.image)
            if problem:
                raise _FieldError(("environments", index, "image"), *problem)
        return self

    @model_validator(mode="after")
    def _shards_need_fixtures(self) -> RunConfig:
        """A command sees the whole fixtures folder at once: it cannot be split."""
        if self.pipeline.callable:
            return self
        if self.run.shards > 1:
            raise _FieldError(("run", "shards"), "shards need a callable pipeline",
                              "remove [run] shards or use pipeline.callable")  # fmt: skip
        for index, env in enumerate(self.environments):
            if (env.shards or 1) > 1:
                raise _FieldError(("environments", index, "shards"),
                                  "shards need a callable pipeline",
                                  "remove shards or use pipeline.callable")  # fmt: skip
        return self

    def shards_of(self, env: EnvironmentConfig) -> int:
        """How many containers run ``env``'s fixtures."""
        return env.shards if env.shards is not None else self.run.shards

    def engine_of(self, env: EnvironmentConfig) -> str:
        """The engine kind that runs ``env``."""
        return env.engine or self.run.engine

    def dockerfile_folder(self, env: EnvironmentConfig) -> Path | None:
        """The build folder when ``env.image`` names a folder, else None (an image reference
        or a compose service: :meth:`compose_service`).

        The same rule the config was validated with; checked again, since files change."""
        if is_compose(env.image):
            return None
        problem = image_problem(self.root, env.image)
        if problem:
            message, fix = problem
            where = f"{self.source}: environment {env.name!r}"
            raise ConfigError(_one_line(f"{where}: {message}"), fix=_one_line(fix))
        return image_folder(self.root, env.image)

    def compose_service(self, env: EnvironmentConfig) -> ComposeService | None:
        """The compose service ``env.image`` names (read again: files change), else None."""
        if not is_compose(env.image):
            return None
        try:
            return _compose_service(self.root, env.image)
        except ConfigError as exc:
            where = f"{self.source}: environment {env.name!r}"
            raise ConfigError(_one_line(f"{where}: {exc.message}"), fix=_one_line(exc.fix)) from exc

    @property
    def stored_dirs(self) -> tuple[Path, ...]:
        """The folders of stored runs, baselines and the history: reprocheck's own output,
        never part of what a container sees or an image is built from."""
        root = self.root.resolve()
        history = (root / self.history).resolve().parent
        return tuple(dict.fromkeys((self.reports_dir, (root / self.baselines).resolve(), history)))

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
    if is_compose(image):
        return None
    if image.startswith((".", "/", "~")) or _is_dir(root / image.split("/", 1)[0]):
        return _absolute(root, image)
    return None


def registry_prefix(value: str) -> str:
    """``HOST[:PORT]/PREFIX`` (or ``HOST[:PORT]``) without a trailing slash: the start of a
    repository name, whose first component is a registry host (it has a '.' or a ':' or is
    ``localhost``, as Docker decides), so that no push goes to Docker Hub by accident."""
    prefix = value.rstrip("/")
    host = prefix.partition("/")[0]
    is_host = "." in host or ":" in host or host == "localhost"
    reference = _REFERENCE_RE.fullmatch(f"{prefix}/name")
    if not is_host or reference is None or reference["name"] != f"{prefix}/name":
        raise ValueError(
            f"{value!r} is no registry: use HOST[:PORT]/PREFIX, like "
            '"127.0.0.1:5000/reprocheck" or "ghcr.io/org" (lowercase, no tag)'
        )
    return prefix


def _engine_host(value: str) -> str:
    """An engine address as the docker SDK takes it: ``ssh://``, ``tcp://`` or ``unix://``."""
    if not value.startswith(_HOST_SCHEMES) or len(value) <= len("ssh://"):
        raise ValueError(
            f"{value!r} is no engine address: use ssh://user@box, tcp://box:2376 or "
            "unix:///path/docker.sock"
        )
    return value


def image_problem(root: Path, image: str) -> tuple[str, str] | None:
    """What is wrong with an environment's ``image`` (message, fix), or None."""
    if is_compose(image):
        return _compose_problem(root, image)
    folder = image_folder(root, image)
    if folder is None:
        if _is_reference(image):
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


def _is_reference(image: str) -> bool:
    reference = _REFERENCE_RE.fullmatch(image)
    return reference is not None and len(reference["name"]) <= _NAME_MAX


def _compose_problem(root: Path, image: str) -> tuple[str, str] | None:
    """What is wrong with a compose service as an environment's image, or None."""
    try:
        _compose_service(root, image)
    except ConfigError as exc:
        return exc.message, exc.fix
    return None


def _compose_service(root: Path, image: str) -> ComposeService:
    """The service ``image`` names, with a valid reference when it has no build."""
    service = load_service(root, image)
    if service.build is None and not _is_reference(service.image or ""):
        raise ConfigError(
            f"{service.file}: service {service.name!r}: image {service.image!r} is not a "
            "valid image reference",
            fix=f"an image reference is lowercase, like {_REFERENCE_EXAMPLE}; or give it a build",
        )
    return service


def _with_compose(root: Path, index: int, env: EnvironmentConfig) -> EnvironmentConfig:
    if not is_compose(env.image):
        return env
    try:
        service = _compose_service(root, env.image)
    except ConfigError as exc:
        raise _FieldError((index, "image"), exc.message, exc.fix) from exc
    update = {"env": {**service.environment, **env.env},
              "platform": env.platform or service.platform}  # fmt: skip
    return env.model_copy(update=update)


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
    for key in INJECTED_KEYS:  # set here, from where the file is: never read from it
        if key in data:
            raise ConfigError(f"{source}: unknown key '{key}'", fix=_unknown_key_fix((key,)))
    try:
        return RunConfig.model_validate({**data, "root": source.parent, "source": source})
    except ValidationError as exc:
        raise _describe(source, exc) from exc


def without_none(annotation: Any) -> Any:
    """``X`` for ``X | None``, else ``annotation`` itself."""
    if get_origin(annotation) not in (Union, UnionType):
        return annotation
    kept = [arg for arg in get_args(annotation) if arg is not type(None)]
    return kept[0] if len(kept) == 1 else annotation


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def file_keys(model: type[BaseModel]) -> list[str]:
    """The keys a config file may write in ``model``'s table, in the model's order."""
    return [
        name for name in model.model_fields if model is not RunConfig or name not in INJECTED_KEYS
    ]


def _resolve(loc: tuple[str | int, ...]) -> tuple[FieldInfo | None, Any]:
    """The field a location ends at (None after a table's key or an index) and its type."""
    field: FieldInfo | None = None
    found: Any = RunConfig
    for part in loc:
        if is_model(found):
            field = found.model_fields.get(str(part))
            found = without_none(field.annotation) if field else None
        elif get_origin(found) in (tuple, dict):
            field = None
            found = without_none(get_args(found)[0 if get_origin(found) is tuple else 1])
        else:
            return None, None
    return field, found


def _one_line(text: str) -> str:
    """``text`` with control characters (a newline in a TOML key or path) escaped."""
    return _CONTROL_RE.sub(lambda found: repr(found[0])[1:-1], text)


def _describe(source: Path, exc: ValidationError) -> ConfigError:
    """One line: the file, the dotted field and what to do."""
    first = exc.errors()[0]
    loc = _location(first)
    if first["type"] == "extra_forbidden":
        return ConfigError(
            _one_line(f"{source}: unknown key '{_dotted(loc)}'"), fix=_unknown_key_fix(loc)
        )
    if first["type"] == "missing":
        return ConfigError(_one_line(f"{source}: missing required key '{_dotted(loc)}'"))
    fix = getattr(first.get("ctx", {}).get("error"), "fix", "")
    message = f"{source}: field '{_dotted(loc)}': {_problem(first, loc)}"
    return ConfigError(_one_line(message), fix=_one_line(fix))


def _problem(error: ErrorDetails, loc: tuple[str | int, ...]) -> str:
    """What is wrong with the value, naming the valid values of a closed set."""
    field, found = _resolve(loc)
    choices = choices_of(field) if field is not None else None
    if error["type"] == "literal_error" and choices is not None:
        return choices.refusal(error["input"])
    if error["type"] in _NOT_A_TABLE:
        keys = (
            f"; use a table with the keys {', '.join(file_keys(found))}" if is_model(found) else ""
        )
        return f"{shown_value(error['input'])} is not a table{keys}"
    return error["msg"].removeprefix("Value error, ") + _got(error)


def _unknown_key_fix(loc: tuple[str | int, ...]) -> str:
    """``did you mean 'timeout'?``, or the keys that table takes."""
    _field, table = _resolve(loc[:-1])
    if not is_model(table):
        return f"check the spelling; {_REFERENCE} lists every key"
    known = file_keys(table)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"did you mean '{close[0]}'? {_REFERENCE} lists every key"
    return f"valid keys here: {', '.join(known)}; {_REFERENCE} describes them"


def _location(error: ErrorDetails) -> tuple[str | int, ...]:
    """Pydantic's location, plus the field a whole-model check blames."""
    parts = [part for part in error["loc"] if not str(part).startswith("function-")]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):
        parts += cause.loc
    return tuple(parts)


def _dotted(loc: tuple[str | int, ...]) -> str:
    """``run.memory``, ``tolerance."*/probs".atol``: a location as TOML writes its keys."""
    return ".".join(
        str(part)
        if isinstance(part, int) or _BARE_KEY_RE.fullmatch(part)
        else json.dumps(part, ensure_ascii=False)
        for part in loc
    )


def _got(error: ErrorDetails) -> str:
    """``, got 0``: the value given, after the messages of pydantic's that do not show it."""
    value = error["input"]
    if error["type"] not in _SHOWS_NO_INPUT or not isinstance(value, str | int | float):
        return ""
    shown = repr(value)
    return f", got {shown}" if len(shown) <= _SHOWN_CHARS else ""
