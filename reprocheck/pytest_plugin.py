"""pytest plugin (entry point ``pytest11``): reprocheck's matrix as a session fixture, and
golden arrays per environment.

Fixtures:

* ``reprocheck_report`` (session): the configured matrix run once per session
  (:func:`reprocheck.api.run`), or the stored run ``--reprocheck-run RUN`` compared again
  (:func:`reprocheck.api.load`; a run folder outside any project is read as stored,
  :meth:`reprocheck.api.Report.read`); ``--reprocheck-baseline NAME`` also compares each
  environment with saved baseline NAME's.
* ``reprocheck_regression``: ``check(arrays)`` compares a dict of arrays with the golden
  ``.npz`` of this test *and environment* (``--reprocheck-env``, else ``$REPROCHECK_ENV``,
  else "host"), with reprocheck's metrics and tolerance rules, in the manner of
  pytest-regressions' ``ndarrays_regression``: a missing golden is written and the test
  fails once; ``--force-regen`` rewrites a golden that differs (and fails once).

Helpers: :func:`assert_consistent`, :func:`assert_no_decision_changes`,
:func:`assert_metric_within` (see :mod:`reprocheck.api`). The heavy modules are imported
when a fixture is first used, so the plugin costs every other pytest session nothing.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import numpy.typing as npt

    from reprocheck.api import Report
    from reprocheck.compare import DecisionRules, Tolerance, ToleranceRules
    from reprocheck.progress import ProgressEvent

__all__ = [
    "EnvironmentRegression",
    "assert_consistent",
    "assert_metric_within",
    "assert_no_decision_changes",
]

ENV_VAR = "REPROCHECK_ENV"
DEFAULT_ENVIRONMENT = "host"
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_RULE = "an environment name is letters, digits, '.', '_' and '-' (a folder of goldens)"
_FAILING_LISTED = 20
logger = logging.getLogger("reprocheck.pytest")
_REPORT = pytest.StashKey["Report"]()
_REGENERATED = pytest.StashKey[list[Path]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reprocheck", "reprocheck: numeric drift across environments")
    group.addoption("--reprocheck-config", metavar="PATH", default=None,
                    help="reprocheck.toml or pyproject.toml (default: ini reprocheck_config, "
                         "else found from the rootdir)")  # fmt: skip
    group.addoption("--reprocheck-run", metavar="RUN", default=None,
                    help="load this stored run (id, folder or 'latest') instead of running "
                         "the matrix")  # fmt: skip
    group.addoption("--reprocheck-baseline", metavar="NAME", default=None,
                    help="also compare each environment with saved baseline NAME's")  # fmt: skip
    group.addoption("--reprocheck-env", metavar="NAME", default=None,
                    help=f"environment the goldens of reprocheck_regression belong to "
                         f"(default: ${ENV_VAR}, else {DEFAULT_ENVIRONMENT!r})")  # fmt: skip
    group.addoption("--reprocheck-force-regen", action="store_true", default=False,
                    help="rewrite goldens that differ (the test fails once)")  # fmt: skip
    if not _regressions_installed():  # pytest-regressions defines --force-regen itself
        group.addoption("--force-regen", action="store_true", default=False,
                        help="rewrite goldens that differ (the test fails once)")  # fmt: skip
    parser.addini("reprocheck_config", "reprocheck configuration file, relative to the ini file",
                  default=None)  # fmt: skip


def _regressions_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("pytest_regressions") is not None


# --- options ------------------------------------------------------------------------------


def _config_path(config: pytest.Config) -> Path | None:
    """--reprocheck-config, else the ini value, else the file found from the rootdir."""
    option = config.getoption("reprocheck_config")
    if option:
        return Path(option)
    ini = config.getini("reprocheck_config")
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / str(ini)
    from reprocheck.config import find_config
    from reprocheck.errors import ConfigError

    try:
        return find_config(config.rootpath)
    except ConfigError:
        return None


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("reprocheck_env")
    if name and not _ENV_NAME.fullmatch(name):
        raise pytest.UsageError(f"--reprocheck-env {name!r}: {_ENV_RULE}")


def _environment(config: pytest.Config) -> str:
    name = config.getoption("reprocheck_env") or os.environ.get(ENV_VAR) or DEFAULT_ENVIRONMENT
    if not _ENV_NAME.fullmatch(name):
        pytest.fail(f"reprocheck: ${ENV_VAR} is {name!r}: {_ENV_RULE}", pytrace=False)
    return str(name)


def _force_regen(config: pytest.Config) -> bool:
    return bool(config.getoption("reprocheck_force_regen")
                or config.getoption("force_regen", default=False))  # fmt: skip


# --- the session report ---------------------------------------------------------------------


def _log_progress(event: ProgressEvent) -> None:
    logger.info("%s %s: %s", event.stage, event.subject, event.message)


@pytest.fixture(scope="session")
def reprocheck_report(pytestconfig: pytest.Config) -> Report:
    """The configured matrix, run once per session (or the stored run --reprocheck-run),
    as a :class:`reprocheck.api.Report`."""
    from reprocheck import api
    from reprocheck.errors import ReprocheckError

    stored = pytestconfig.getoption("reprocheck_run")
    baseline = pytestconfig.getoption("reprocheck_baseline")
    path = _config_path(pytestconfig)
    if path is None and stored and Path(stored).is_dir():
        return _read(pytestconfig, Path(stored))  # a run folder without its project (CI)
    if path is None:
        pytest.fail(f"reprocheck: no reprocheck.toml (or [tool.reprocheck] in pyproject.toml) in "
                    f"{pytestconfig.rootpath} or its parents (pass --reprocheck-config PATH or "
                    f"set the ini option reprocheck_config)", pytrace=False)  # fmt: skip
    problem = ""
    try:
        if stored:
            report = api.load(stored, path, baseline=baseline)
        else:
            report = api.run(path, baseline=baseline, progress=_log_progress)
    except ReprocheckError as exc:
        problem = str(exc)  # failed outside the handler: no chained traceback in the message
    if problem:
        pytest.fail(f"reprocheck: {problem}", pytrace=False)
    pytestconfig.stash[_REPORT] = report
    return report


def _read(pytestconfig: pytest.Config, folder: Path) -> Report:
    """The report stored in a run folder, as written (no configuration to compare with)."""
    from reprocheck import api
    from reprocheck.errors import ReprocheckError

    problem = ""
    try:
        report = api.Report.read(folder)
    except ReprocheckError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(f"reprocheck: {problem}", pytrace=False)
    pytestconfig.stash[_REPORT] = report
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is not None:
        from reprocheck.store import HTML_FILE

        html = report.path / HTML_FILE
        where = html if html.is_file() else report.path
        terminalreporter.write_line(f"reprocheck: {report.headline()}: {where}")
    for golden in config.stash.get(_REGENERATED, []):
        terminalreporter.write_line(f"reprocheck: wrote golden {golden}")


def assert_consistent(report: Report) -> None:
    """See :func:`reprocheck.api.assert_consistent`."""
    __tracebackhide__ = True
    from reprocheck import api

    api.assert_consistent(report)


def assert_no_decision_changes(report: Report, pattern: str = "*") -> None:
    """See :func:`reprocheck.api.assert_no_decision_changes`."""
    __tracebackhide__ = True
    from reprocheck import api

    api.assert_no_decision_changes(report, pattern)


def assert_metric_within(
    report: Report, pattern: str, *, atol: float | None = None, rtol: float | None = None
) -> None:
    """See :func:`reprocheck.api.assert_metric_within`."""
    __tracebackhide__ = True
    from reprocheck import api

    api.assert_metric_within(report, pattern, atol=atol, rtol=rtol)


# --- goldens per environment ------------------------------------------------------------------


@pytest.fixture
def reprocheck_datadir(request: pytest.FixtureRequest) -> Path:
    """Where this test module's goldens live: ``<module folder>/<module name>/`` (as
    pytest-datadir's ``original_datadir``); override it to keep them elsewhere."""
    return request.path.parent / request.path.stem


@pytest.fixture
def reprocheck_regression(
    request: pytest.FixtureRequest, reprocheck_datadir: Path
) -> EnvironmentRegression:
    """Compare arrays with this test's golden for the current environment; see
    :class:`EnvironmentRegression`."""
    config = request.config
    return EnvironmentRegression(
        datadir=reprocheck_datadir,
        basename=re.sub(r"\W", "_", request.node.name),
        environment=_environment(config),
        force_regen=_force_regen(config),
        config_path=_config_path(config),
        regenerated=config.stash.setdefault(_REGENERATED, []),
    )


@dataclass(frozen=True, kw_only=True)
class _Checked:
    name: str  # <basename>/<key>, the name tolerance rules match
    verdict: str
    line: str


class EnvironmentRegression:
    """Golden arrays per environment: ``<datadir>/<environment>/<basename>.npz``.

    Each array is compared as reprocheck compares an output named ``<basename>/<key>``:
    with ``tolerances`` (key or glob -> :class:`~reprocheck.compare.Tolerance` or a dict of
    its fields, e.g. ``{"logits": {"atol": 1e-6}}``), else ``default_tolerance``, else the
    project configuration's ``[tolerance]`` rules (exact when there is none); the
    configuration's ``[decisions]`` rules count changed decisions. Identical and
    within-tolerance arrays pass; drift, incomparable arrays (dtype, shape) and keys on one
    side only fail, listing each array's metrics.
    """

    def __init__(
        self, *, datadir: Path, basename: str, environment: str, force_regen: bool,
        config_path: Path | None, regenerated: list[Path],
    ) -> None:  # fmt: skip
        self.datadir = datadir
        self.basename = basename
        self.environment = environment
        self.force_regen = force_regen
        self._config_path = config_path
        self._regenerated = regenerated

    def golden_path(self, basename: str | None = None, environment: str | None = None) -> Path:
        name = basename or self.basename
        return self.datadir / (environment or self.environment) / f"{name}.npz"

    def check(
        self,
        data_dict: Mapping[str, npt.ArrayLike],
        basename: str | None = None,
        fullpath: str | os.PathLike[str] | None = None,
        tolerances: Mapping[str, Tolerance | Mapping[str, Any]] | None = None,
        default_tolerance: Tolerance | Mapping[str, Any] | None = None,
    ) -> None:
        """Compare ``data_dict`` (name -> array) with the golden of this test for this
        environment (``basename`` replaces the test's name, ``fullpath`` the whole path).
        Writes a missing golden and fails; rewrites a differing one and fails under
        ``--force-regen``; else fails listing what drifted."""
        __tracebackhide__ = True
        arrays = _arrays(data_dict)
        base = basename or self.basename
        path = Path(fullpath) if fullpath is not None else self.golden_path(base)
        if not path.is_file():
            self._write(path, arrays)
            others = self._against_other_environments(arrays, base, tolerances,
                                                      default_tolerance)  # fmt: skip
            pytest.fail(f"reprocheck regression: no golden for environment "
                        f"{self.environment!r}: created {path} ({len(arrays)} arrays); run "
                        f"again to compare{others}", pytrace=False)  # fmt: skip
        checked = self._compare(_read_npz(path), arrays, base, tolerances, default_tolerance)
        failing = [c for c in checked if c.verdict in _failing()]
        if not failing:
            return
        listing = _listing([c.line for c in failing])
        what = (f"{len(failing)} of {len(checked)} arrays differ from the golden of environment "
                f"{self.environment!r}")  # fmt: skip
        if self.force_regen:
            self._write(path, arrays)
            pytest.fail(f"reprocheck regression: {what} and --force-regen is set: rewrote "
                        f"{path}\n{listing}", pytrace=False)  # fmt: skip
        pytest.fail(f"reprocheck regression: {what} ({path}; --force-regen rewrites it)\n"
                    f"{listing}", pytrace=False)  # fmt: skip

    # --- internals ----------------------------------------------------------------------

    def _write(self, path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        import numpy as np

        from reprocheck.store import write_bytes_atomic

        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        write_bytes_atomic(path, buffer.getvalue())
        self._regenerated.append(path)

    def _compare(
        self,
        golden: Mapping[str, npt.NDArray[Any]],
        arrays: Mapping[str, npt.NDArray[Any]],
        basename: str,
        tolerances: Mapping[str, Tolerance | Mapping[str, Any]] | None,
        default_tolerance: Tolerance | Mapping[str, Any] | None,
    ) -> list[_Checked]:
        from reprocheck.api import describe
        from reprocheck.compare import compare_arrays
        from reprocheck.comparisons import OutputComparison

        rules, decisions = self._rules()
        user = _user_rules(tolerances)
        found = []
        for key in sorted(set(golden) | set(arrays)):
            name = f"{basename}/{key}"
            if key not in arrays or key not in golden:
                where = "new arrays" if key not in arrays else "golden"
                found.append(_Checked(name=name, verdict="missing",
                                      line=f"{name}: missing (not in the {where})"))  # fmt: skip
                continue
            fallback = (_tolerance("default", default_tolerance) if default_tolerance is not None
                        else rules.for_output(name))  # fmt: skip
            tolerance = _most_specific(user, key) or fallback
            try:
                result = compare_arrays(golden[key], arrays[key], tolerance,
                                        decisions.for_output(name))  # fmt: skip
            except Exception as exc:
                found.append(_Checked(name=name, verdict="error",
                                      line=f"{name}: cannot compare: {exc}"))  # fmt: skip
                continue
            item = OutputComparison(output=name, baseline=f"golden[{self.environment}]",
                                    candidate="new", verdict=result.verdict,
                                    metrics=result)  # fmt: skip
            found.append(_Checked(name=name, verdict=result.verdict, line=describe(item)))
        return found

    def _against_other_environments(
        self,
        arrays: Mapping[str, npt.NDArray[Any]],
        basename: str,
        tolerances: Mapping[str, Tolerance | Mapping[str, Any]] | None,
        default_tolerance: Tolerance | Mapping[str, Any] | None,
    ) -> str:
        """How the new arrays compare with the goldens other environments have."""
        lines = []
        folders = sorted(self.datadir.iterdir()) if self.datadir.is_dir() else []
        for folder in folders:
            other = folder / f"{basename}.npz"
            if folder.name == self.environment or not other.is_file():
                continue
            try:
                checked = self._compare(_read_npz(other), arrays, basename, tolerances,
                                        default_tolerance)  # fmt: skip
            except Exception as exc:  # another golden is a hint here, never the failure
                lines.append(f"{folder.name}'s golden: cannot compare: {exc}")
                continue
            failing = [c for c in checked if c.verdict in _failing()]
            verdicts = sorted({c.verdict for c in checked})
            head = f"against {folder.name}'s golden: {', '.join(verdicts) or 'no arrays'}"
            lines.append(head + "".join(f"\n    {c.line}" for c in failing[:5]))
        return "".join(f"\n  {line}" for line in lines)

    def _rules(self) -> tuple[ToleranceRules, DecisionRules]:
        from reprocheck.compare import DecisionRules, ToleranceRules
        from reprocheck.config import load_config
        from reprocheck.errors import ReprocheckError
        from reprocheck.matrix import decision_rules, tolerance_rules

        if self._config_path is None:
            return ToleranceRules(), DecisionRules()
        problem = ""
        try:
            config = load_config(self._config_path)
        except ReprocheckError as exc:
            problem = str(exc)
        if problem:
            pytest.fail(f"reprocheck: {problem}", pytrace=False)
        return tolerance_rules(config), decision_rules(config)


def _failing() -> frozenset[str]:
    from reprocheck.vocabulary import PROBLEMS

    return PROBLEMS


def _listing(lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:_FAILING_LISTED]]
    if len(lines) > _FAILING_LISTED:
        shown.append(f"  ... and {len(lines) - _FAILING_LISTED} more")
    return "\n".join(shown)


def _arrays(data: Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[Any]]:
    """The arrays to store: string keys, dtypes reprocheck compares (no objects, strings)."""
    import numpy as np

    from reprocheck.compare.dtypes import value_kind
    from reprocheck.errors import OutputError

    if not isinstance(data, Mapping):
        raise TypeError(f"check() takes a dict of name -> array, not {type(data).__name__}")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"array names must be non-empty strings, not {key!r}")
        array = np.asarray(value)
        try:
            value_kind(array.dtype)
        except OutputError as exc:
            raise TypeError(f"{key!r}: {exc}") from exc
        arrays[key] = array
    return arrays


def _read_npz(path: Path) -> dict[str, npt.NDArray[Any]]:
    """A golden's arrays, read without unpickling."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        problem = str(exc)
    pytest.fail(f"reprocheck regression: golden {path} cannot be read: {problem} (delete it "
                f"to write it again)", pytrace=False)  # fmt: skip


def _tolerance(pattern: str, spec: Tolerance | Mapping[str, Any]) -> Tolerance:
    from reprocheck.compare import Tolerance

    if isinstance(spec, Tolerance):
        return spec
    return Tolerance(pattern=pattern, **dict(spec))


def _user_rules(tolerances: Mapping[str, Tolerance | Mapping[str, Any]] | None) -> ToleranceRules:
    from reprocheck.compare import ToleranceRules

    given = (tolerances or {}).items()
    return ToleranceRules(rules=tuple(_named(_tolerance(key, spec), key) for key, spec in given))


def _named(rule: Tolerance, pattern: str) -> Tolerance:
    """A rule under the key or glob it was given for (what matching and messages use)."""
    import dataclasses

    return dataclasses.replace(rule, pattern=pattern)


def _most_specific(rules: ToleranceRules, key: str) -> Tolerance | None:
    """The user's rule for ``key`` (an exact key beats a glob), or None."""
    import fnmatch

    if not any(fnmatch.fnmatchcase(key, rule.pattern) for rule in rules.rules):
        return None
    return rules.for_output(key)
