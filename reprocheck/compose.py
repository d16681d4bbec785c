"""A compose file -> the one service an environment names (``image = "compose:FILE#SERVICE"``).

Only what decides the image and its environment is read, as ``docker compose -f FILE`` reads
it: ``build`` (a context folder, or a table with ``context``, ``dockerfile`` and ``args``),
``image``, ``environment`` and ``platform``, with ``${VAR}`` interpolation from this process's
environment. Run-time keys (``command``, ``volumes``, ``ports``, ``user``, ``networks``, ...)
are ignored: reprocheck starts the container itself, with its own hermetic settings. Keys
that would change the image or its environment in a way this module does not reproduce are
refused with a one-line :class:`ConfigError` instead of being ignored.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reprocheck.errors import ConfigError

PREFIX = "compose:"
DEFAULT_DOCKERFILE = "Dockerfile"
_FORM = '"compose:FILE#SERVICE", e.g. "compose:docker-compose.yml#inference"'
_COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
_NAME_RE = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # the two-character ones first
_REMOTE_CONTEXT = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@|github\.com/)", re.IGNORECASE)
# Keys that change the image or its environment, which this module does not reproduce: they
# are refused rather than ignored, so a run never uses another image than compose would.
_REFUSED_SERVICE_KEYS = {
    "env_file": "move its variables into the service's environment or the environment's env",
    "extends": "copy the keys it takes from the other service into this one",
}
_REFUSED_BUILD_KEYS = {
    "dockerfile_inline": "write it to a file and name that in build.dockerfile",
    "target": "make the stage the last one of its Dockerfile, or a Dockerfile of its own",
    "additional_contexts": "copy those files into the build context",
    "secrets": "build without build secrets",
    "ssh": "build without ssh forwarding",
}
_log = logging.getLogger(__name__)
_warned: set[tuple[str, str, str]] = set()  # a file is read more than once per run: warn once


@dataclass(frozen=True, kw_only=True)
class ComposeBuild:
    """A service's ``build``: what ``docker compose build`` sends and asks for."""

    context: Path  # an existing folder, absolute
    dockerfile: str  # relative to ``context``, with '/' separators; a file inside it
    args: Mapping[str, str]  # build args with a value (one without a value is left out)


@dataclass(frozen=True, kw_only=True)
class ComposeService:
    """The service an environment names, interpolated and checked."""

    file: Path  # the compose file, absolute
    name: str
    build: ComposeBuild | None  # None: the service only names ``image``
    image: str | None  # the image reference (with ``build``: the tag compose would give it)
    environment: Mapping[str, str]
    platform: str | None

    @property
    def source(self) -> str:
        """``compose:/abs/docker-compose.yml#inference``: where the image comes from."""
        return f"{PREFIX}{self.file}#{self.name}"


def is_compose(image: str) -> bool:
    """``image`` names a compose service (a registry image called ``compose`` is written
    ``docker.io/library/compose:TAG``)."""
    return image.startswith(PREFIX)


def load_service(
    root: Path, image: str, environ: Mapping[str, str] | None = None
) -> ComposeService:
    """The service ``compose:FILE#SERVICE`` names, FILE relative to ``root``; interpolated from
    ``environ`` (default: this process's environment). One-line ConfigError on bad input."""
    file, name = _parse(root, image)
    services = _services(file, _read(file))
    if name not in services:
        raise ConfigError(f"{file}: no service {name!r}", fix=_known_services(name, services))
    where = f"{file}: service {name!r}"
    service = services[name]
    if not isinstance(service, dict):
        raise ConfigError(f"{where} is not a mapping", fix=_NEITHER_FIX)
    _refuse(where, service, _REFUSED_SERVICE_KEYS, "")
    dotenv = file.parent / ".env"
    expand = _Interpolation(os.environ if environ is None else environ, where, dotenv)
    build = _build(file, where, service.get("build"), expand)
    image_ref = _optional_text(where, "image", service.get("image"), expand)
    if build is None and not image_ref:
        raise ConfigError(f"{where} has neither build nor image", fix=_NEITHER_FIX)
    return ComposeService(
        file=file,
        name=name,
        build=build,
        image=image_ref or None,
        environment=_pairs(where, "environment", service.get("environment"), expand),
        platform=_optional_text(where, "platform", service.get("platform"), expand) or None,
    )


_NEITHER_FIX = (
    "give the service build: (a folder with a Dockerfile, relative to the compose file) "
    "or image: (an image reference)"
)


def _parse(root: Path, image: str) -> tuple[Path, str]:
    file, hash_sign, name = image.removeprefix(PREFIX).partition("#")
    if not file or not hash_sign or not name:
        raise ConfigError(f"{image!r} names no compose file and service", fix=f"write {_FORM}")
    try:
        return (root / Path(file).expanduser()).resolve(), name
    except (OSError, RuntimeError, ValueError) as exc:  # an unknown ~user, a link loop, a NUL
        raise ConfigError(f"{image!r}: {file!r} is no usable path", fix=f"write {_FORM}") from exc


def _read(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"compose file {file} does not exist", fix=_nearby(file)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"{file}: cannot read: {reason}", fix="name a readable compose file"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{file}: invalid YAML: {_yaml_problem(exc)}",
            fix="fix the syntax (docker compose config shows it too)",
        ) from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _nearby(file: Path) -> str:
    try:
        found = sorted(p.name for p in file.parent.iterdir() if p.name in _COMPOSE_NAMES)
    except OSError:
        found = []
    where = "the path is relative to the config file's folder"
    return f"{where}; compose files in {file.parent}: {', '.join(found)}" if found else where


def _services(file: Path, data: Any) -> dict[str, Any]:
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        raise ConfigError(
            f"{file} has no services mapping",
            fix="a compose file has a top-level 'services:' mapping",
        )
    return {str(name): value for name, value in services.items()}


def _known_services(name: str, services: Mapping[str, Any]) -> str:
    if not services:
        return "the file declares no service"
    close = difflib.get_close_matches(name, list(services), n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"{guess}services in it: {', '.join(sorted(services))}"


def _refuse(where: str, table: Mapping[str, Any], refused: Mapping[str, str], prefix: str) -> None:
    for key, fix in refused.items():
        if key in table:
            raise ConfigError(f"{where}: {prefix}{key} is not supported by reprocheck", fix=fix)


def _build(file: Path, where: str, value: Any, expand: _Interpolation) -> ComposeBuild | None:
    """``build: ./dir`` or ``build: {context, dockerfile, args}``, checked on disk."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"context": value}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: build must be a folder or a mapping",
            fix="write build: ./folder or build: {context: ., dockerfile: ...}",
        )
    _refuse(where, value, _REFUSED_BUILD_KEYS, "build.")
    context_text = _optional_text(where, "build.context", value.get("context", "."), expand)
    if _REMOTE_CONTEXT.match(context_text):
        raise ConfigError(
            f"{where}: build.context {context_text!r} is remote, not supported",
            fix="clone it and name the local folder",
        )
    context = _folder(file.parent, context_text or ".")
    if not context.is_dir():
        raise ConfigError(
            f"{where}: build context {context} is not a folder",
            fix="build.context is relative to the compose file's folder",
        )
    dockerfile = _optional_text(where, "build.dockerfile", value.get("dockerfile"), expand)
    return ComposeBuild(
        context=context,
        dockerfile=_dockerfile(where, context, dockerfile or DEFAULT_DOCKERFILE),
        args=_pairs(where, "build.args", value.get("args"), expand),
    )


def _folder(base: Path, text: str) -> Path:
    try:
        return (base / Path(text).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError):
        return base / text


def _dockerfile(where: str, context: Path, name: str) -> str:
    """The Dockerfile's path inside the context (compose resolves it from the context)."""
    path = _folder(context, name)
    if not path.is_relative_to(context):
        raise ConfigError(
            f"{where}: Dockerfile {path} is outside the build context {context}",
            fix="move it into the context folder",
        )
    if not path.is_file():
        raise ConfigError(
            f"{where}: no Dockerfile {path}",
            fix="build.dockerfile is relative to the build context",
        )
    return path.relative_to(context).as_posix()


def _optional_text(where: str, field: str, value: Any, expand: _Interpolation) -> str:
    """A string field, interpolated; '' when absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(
            f"{where}: {field} must be a string, got {type(value).__name__}",
            fix=f"quote the value of {field}",
        )
    return expand(value, field)


def _pairs(where: str, field: str, value: Any, expand: _Interpolation) -> dict[str, str]:
    """``environment`` / ``build.args``: a mapping or a list of ``KEY=VALUE`` (``KEY`` alone,
    or a null value, takes the variable from this process's environment, if it is set)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        items = [
            _mapping_item(where, f"{field}.{key}", str(key), item, expand)
            for key, item in value.items()
        ]
    elif isinstance(value, list):
        items = [_list_item(where, field, item, expand) for item in value]
    else:
        raise ConfigError(
            f"{where}: {field} must be a mapping or a list of KEY=VALUE",
            fix=f"write {field}: {{KEY: value}} or {field}: [KEY=value]",
        )
    pairs: dict[str, str] = {}
    for key, item in items:
        if not key:
            raise ConfigError(
                f"{where}: {field} has an entry without a name", fix="write KEY=VALUE"
            )
        resolved = expand.lookup(key) if item is None else item
        if resolved is not None:
            pairs[key] = resolved
    return pairs


def _mapping_item(
    where: str, field: str, key: str, value: Any, expand: _Interpolation
) -> tuple[str, str | None]:
    """A mapping's value as compose takes it: text, a number or a boolean; None: unset."""
    if value is None:
        return key, None
    if isinstance(value, str):
        return key, expand(value, field)
    if isinstance(value, bool):
        return key, "true" if value else "false"
    if isinstance(value, int | float):
        return key, str(value)
    raise ConfigError(
        f"{where}: {field} must be a string, a number or a boolean", fix="quote the value"
    )


def _list_item(where: str, field: str, item: Any, expand: _Interpolation) -> tuple[str, str | None]:
    """``KEY=VALUE`` (interpolated as a whole, as compose does) or ``KEY``."""
    if not isinstance(item, str):
        raise ConfigError(
            f"{where}: {field} entry {item!r} is not KEY=VALUE", fix="quote each entry of the list"
        )
    key, equals, rest = expand(item, field).partition("=")
    return key, rest if equals else None


class _Interpolation:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+replacement}``, ``${VAR+replacement}`` and
    ``$$`` (a literal ``$``), nested in defaults. An unset variable without a default is the
    empty string (compose warns; so does this, through its logger). Compose's ``.env`` file is
    not read: a variable it could provide is an error, not a silent difference."""

    def __init__(self, environ: Mapping[str, str], where: str, dotenv: Path) -> None:
        self._environ = environ
        self._where = where
        self._dotenv = dotenv

    def __call__(self, text: str, field: str) -> str:
        out: list[str] = []
        start = 0
        while (dollar := text.find("$", start)) >= 0:
            out.append(text[start:dollar])
            value, start = self._expression(text, dollar, field)
            out.append(value)
        out.append(text[start:])
        return "".join(out)

    def lookup(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None and self._dotenv.is_file():
            raise ConfigError(
                f"{self._where}: ${{{name}}} is not set, and reprocheck does not read "
                f"{self._dotenv} as compose would",
                fix=f"export {name} before running reprocheck, or write the value into the "
                "compose file",
            )
        return value

    def _expression(self, text: str, dollar: int, field: str) -> tuple[str, int]:
        """The value of the expression at ``text[dollar]`` and the index after it."""
        following = text[dollar + 1 : dollar + 2]
        if following == "$":
            return "$", dollar + 2
        if following == "{":
            end = _closing_brace(text, dollar + 2)
            if end < 0:
                raise self._invalid(text, field)
            return self._braced(text[dollar + 2 : end], text, field), end + 1
        name = _NAME_RE.match(text, dollar + 1)
        if name is None:
            raise self._invalid(text, field)
        return self._plain(name[0], field), name.end()

    def _braced(self, body: str, text: str, field: str) -> str:
        name = _NAME_RE.match(body)
        if name is None:
            raise self._invalid(text, field)
        rest = body[name.end() :]
        if not rest:
            return self._plain(name[0], field)
        operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
        if operator is None:
            raise self._invalid(text, field)
        value = self.lookup(name[0])
        argument = rest[len(operator) :]
        # With ':' an empty value counts as unset, as in the shell.
        if value is not None and (value != "" or not operator.startswith(":")):
            return self(argument, field) if operator.endswith("+") else value
        if operator.endswith("?"):
            reason = self(argument, field) or f"{name[0]} is required"
            raise ConfigError(
                f"{self._where}: {field}: {reason}",
                fix=f"set {name[0]} in the environment reprocheck runs in",
            )
        return self(argument, field) if operator.endswith("-") else ""

    def _plain(self, name: str, field: str) -> str:
        value = self.lookup(name)
        if value is None and (self._where, field, name) not in _warned:
            _warned.add((self._where, field, name))
            _log.warning("%s: %s: $%s is not set; using an empty string", self._where, field, name)
        return value or ""

    def _invalid(self, text: str, field: str) -> ConfigError:
        return ConfigError(
            f"{self._where}: {field}: invalid interpolation in {text!r}",
            fix="write ${VAR}, ${VAR:-default}, ${VAR:?error} or ${VAR:+value}; $$ for a literal $",
        )


def _closing_brace(text: str, start: int) -> int:
    """The index of the ``}`` closing a ``${`` opened before ``start``, or -1 (counted as
    compose-go counts: every ``${`` opens, every ``}`` closes)."""
    depth, index = 1, start
    while index < len(text):
        if text.startswith("${", index):
            depth, index = depth + 1, index + 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1
