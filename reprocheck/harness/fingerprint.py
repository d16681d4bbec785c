"""Environment fingerprint gathered inside a container, after the pipeline ran.

This module runs INSIDE the containers under test: it must work on Python 3.9
through 3.13 with only the standard library.  numpy is described if importable,
cv2 in full when the pipeline imported it (else only where it is installed).
Every probe is isolated: a failure becomes an ``"error: ..."``
string in its field, and :func:`collect` never raises.

For a callable pipeline the caller invokes :func:`collect` in the same process
after the pipeline ran, so ``/proc/self/maps`` (read before this module imports
numpy and cv2 itself) lists the shared libraries the pipeline loaded.  For a
command pipeline the caller passes ``processes``: what the command's own
processes mapped (see run.py); the caller's process does not count.  Run as a
script, it prints the fingerprint as JSON.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional

__all__ = ["collect"]

OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
DPKG_INFO_GLOB = "/var/lib/dpkg/info/*.list"
DPKG_STATUS = "/var/lib/dpkg/status"

# Environment variables that steer numerics: exact names and name prefixes.
ENV_NAMES = frozenset(
    {
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_CORETYPE",
        "NPY_DISABLE_CPU_FEATURES",
        "NPY_ENABLE_CPU_FEATURES",
        "OPENCV_CPU_DISABLE",
        "OPENCV_FOR_THREADS_NUM",
        "OPENCV_OPENCL_DEVICE",
        "GLIBC_TUNABLES",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONHASHSEED",
        "TZ",
        "LANG",
        "LC_ALL",
    }
)
ENV_PREFIXES = ("OPENCV_IO_", "JSIMD_FORCE", "MALLOC_", "KMP_", "GOMP_")

# Interesting lines of cv2.getBuildInformation(): (key in the result, line key,
# text that must occur in the section path or None).
CV2_BUILD_KEYS = (
    ("Version control", "Version control", None),
    ("Configuration", "Configuration", "Platform"),
    ("Baseline", "Baseline", "CPU/HW features"),
    ("Dispatched code generation", "Dispatched code generation", "CPU/HW features"),
    ("C++ Compiler", "C++ Compiler", "C/C++"),
    ("C++ flags (Release)", "C++ flags (Release)", "C/C++"),
    ("Built as dynamic libs?", "Built as dynamic libs?", "C/C++"),
    ("3rdparty dependencies", "3rdparty dependencies", "C/C++"),
    ("ZLib", "ZLib", "Media I/O"),
    ("JPEG", "JPEG", "Media I/O"),
    ("JPEG SIMD Support", "SIMD Support", "Media I/O/JPEG"),
    ("PNG", "PNG", "Media I/O"),
    ("TIFF", "TIFF", "Media I/O"),
    ("WEBP", "WEBP", "Media I/O"),
    ("JPEG 2000", "JPEG 2000", "Media I/O"),
    ("OpenEXR", "OpenEXR", "Media I/O"),
    ("AVIF", "AVIF", "Media I/O"),
    ("GDAL", "GDAL", "Media I/O"),
    ("HDR", "HDR", "Media I/O"),
    ("Parallel framework", "Parallel framework", None),
    ("Intel IPP", "Intel IPP", "Other third-party libraries"),
    ("Lapack", "Lapack", "Other third-party libraries"),
    ("Eigen", "Eigen", "Other third-party libraries"),
    ("Custom HAL", "Custom HAL", "Other third-party libraries"),
    ("OpenCL", "OpenCL", None),
    ("Python 3 numpy", "numpy", "Python 3"),
    ("Python 3 Interpreter", "Interpreter", "Python 3"),
)

# cv::CpuFeatures ids (opencv2/core/cvdef.h); checkHardwareSupport takes these.
CV2_CPU_FEATURES_X86 = (
    ("MMX", 1),
    ("SSE", 2),
    ("SSE2", 3),
    ("SSE3", 4),
    ("SSSE3", 5),
    ("SSE4_1", 6),
    ("SSE4_2", 7),
    ("POPCNT", 8),
    ("FP16", 9),
    ("AVX", 10),
    ("AVX2", 11),
    ("FMA3", 12),
    ("AVX_512F", 13),
    ("AVX_512BW", 14),
    ("AVX_512CD", 15),
    ("AVX_512DQ", 16),
    ("AVX_512ER", 17),
    ("AVX_512IFMA", 18),
    ("AVX_512PF", 19),
    ("AVX_512VBMI", 20),
    ("AVX_512VL", 21),
    ("AVX_512VBMI2", 22),
    ("AVX_512VNNI", 23),
    ("AVX_512BITALG", 24),
    ("AVX_512VPOPCNTDQ", 25),
    ("AVX_5124VNNIW", 26),
    ("AVX_5124FMAPS", 27),
)
CV2_CPU_FEATURES_OTHER = (
    ("NEON", 100),
    ("NEON_DOTPROD", 101),
    ("NEON_FP16", 102),
    ("NEON_BF16", 103),
    ("MSA", 150),
    ("RISCVV", 170),
    ("VSX", 200),
    ("VSX3", 201),
    ("RVV", 210),
    ("LASX", 230),
)

BLAS_LIB_RE = re.compile(r"blas|lapack|atlas|mkl|blis|flexiblas", re.IGNORECASE)
SO_NAME_RE = re.compile(r"\.so(\.|$)")
USR_MERGED_DIRS = ("/lib/", "/lib32/", "/lib64/", "/libx32/", "/bin/", "/sbin/")

# OpenBLAS introspection entry points: plain builds, 64-bit-int builds, and the
# scipy-openblas builds bundled in numpy >= 2 wheels.
OPENBLAS_SYMBOL_PREFIXES = ("openblas_", "scipy_openblas_")
OPENBLAS_SYMBOL_SUFFIXES = ("", "64_")


# --------------------------------------------------------------------------
# plumbing


def _error(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {exc}"


def _safe(func: Callable[..., Any], *args: Any) -> Any:
    """Run one probe; any exception becomes an ``"error: ..."`` string."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return func(*args)
    except Exception as exc:  # a probe must never break the fingerprint
        return _error(exc)


def _jsonable(value: Any) -> Any:
    """Recursively convert to JSON-serialisable types (unknown -> str)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        if isinstance(value, (set, frozenset)):
            items.sort(key=str)
        return items
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def _import(name: str) -> Any:
    """Import a module quietly; None if it is not importable."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:
        return None


# --------------------------------------------------------------------------
# OS, kernel, libc, python


def _parse_os_release(text: str) -> Dict[str, str]:
    result = {}  # type: Dict[str, str]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
            value = parts[0] if parts else ""
        except ValueError:
            value = raw.strip().strip("\"'")
        result[key.strip()] = value
    return result


def probe_os() -> Dict[str, str]:
    for path in OS_RELEASE_FILES:
        if os.path.exists(path):
            return _parse_os_release(_read_text(path))
    raise FileNotFoundError(f"no os-release file in {OS_RELEASE_FILES}")


def probe_kernel() -> Dict[str, str]:
    uname = platform.uname()
    # nodename is left out on purpose: it is the random container hostname.
    return {"system": uname.system, "release": uname.release, "version": uname.version}


def probe_glibc() -> str:
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        value = None
    if value:
        return value.split(" ", 1)[1] if value.startswith("glibc ") else value
    lib, version = platform.libc_ver()
    if not version:
        raise RuntimeError(f"C library version not found (lib={lib!r})")
    return version


def probe_python() -> Dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "compiler": platform.python_compiler(),
        "build": list(platform.python_build()),
    }


# --------------------------------------------------------------------------
# CPU


def _cpuinfo_first_block(text: str) -> Dict[str, str]:
    block = {}  # type: Dict[str, str]
    for line in text.splitlines():
        if not line.strip():
            if block:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            block.setdefault(key.strip(), value.strip())
    return block


def _affinity() -> Any:
    return _safe(lambda: len(os.sched_getaffinity(0)))


def probe_cpu() -> Dict[str, Any]:
    info = _safe(lambda: _cpuinfo_first_block(_read_text("/proc/cpuinfo")))
    result = {"count": os.cpu_count(), "affinity": _affinity()}  # type: Dict[str, Any]
    if isinstance(info, str):
        result.update(model=info, flags=info)
        return result
    model = info.get("model name") or info.get("Model") or info.get("cpu model")
    if not model and "CPU implementer" in info:
        model = "implementer {} part {} variant {} revision {}".format(
            info.get("CPU implementer"),
            info.get("CPU part"),
            info.get("CPU variant"),
            info.get("CPU revision"),
        )
    flags = info.get("flags") or info.get("Features") or ""
    result["model"] = model
    result["flags"] = sorted(set(flags.split()))
    emulated = os.environ.get("REPROCHECK_CPU")
    if emulated and os.environ.get("REPROCHECK_EMULATED"):
        # /proc/cpuinfo is the host's: qemu-user emulates the instructions (and CPUID, which
        # numpy's and OpenCV's feature lists read), not that file.
        result["host_model"], result["host_flags"] = model, result["flags"]
        requested = os.environ.get("REPROCHECK_CPU_REQUESTED") or emulated
        result["model"] = f"{requested} (qemu-user -cpu {emulated})"
        result["flags"] = []
        result["emulated"] = {"qemu_model": emulated, "requested": requested}
    return result


# --------------------------------------------------------------------------
# numpy


def _numpy_config(np: Any) -> Dict[str, Any]:
    """Build configuration: dicts on numpy >= 1.25, else text + *_info dicts."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            cfg = np.show_config(mode="dicts")
        except TypeError:
            cfg = None
    if isinstance(cfg, dict):
        return cfg
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        np.show_config()
    info = {}  # type: Dict[str, Any]
    module = getattr(np, "__config__", None)
    for name in dir(module):
        value = getattr(module, name, None)
        if name.endswith("_info") and isinstance(value, dict):
            info[name] = value
    return {"show_config": buf.getvalue(), "info": info}


def _numpy_umath(np: Any) -> Any:
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        module = _import(name)
        if module is not None and hasattr(module, "__cpu_features__"):
            return module
    raise ImportError("numpy _multiarray_umath with __cpu_features__ not found")


def _numpy_simd(np: Any) -> Dict[str, Any]:
    umath = _numpy_umath(np)
    features = dict(getattr(umath, "__cpu_features__", {}) or {})
    baseline = getattr(umath, "__cpu_baseline__", None)
    dispatch = getattr(umath, "__cpu_dispatch__", None)
    return {
        "baseline": list(baseline) if baseline is not None else None,
        "dispatch": list(dispatch) if dispatch is not None else None,
        "found": sorted(k for k, v in features.items() if v),
        "not_found": sorted(k for k, v in features.items() if not v),
    }


def probe_numpy(np: Any, preloaded: bool) -> Optional[Dict[str, Any]]:
    if np is None:
        return None
    return {
        "version": _safe(lambda: np.__version__),
        "file": _safe(lambda: np.__file__),
        "preloaded": preloaded,
        "config": _safe(_numpy_config, np),
        "simd": _safe(_numpy_simd, np),
    }


# --------------------------------------------------------------------------
# OpenCV


def parse_cv2_build_information(text: str) -> Dict[str, str]:
    """Flatten getBuildInformation() into {"Section/Sub/Key": value}."""
    flat = {}  # type: Dict[str, str]
    stack = []  # type: List[tuple]
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or ":" not in stripped or stripped.startswith(("---", "===")):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = stripped.partition(":")
        key = key.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([k for _, k in stack] + [key])
        flat.setdefault(path, value.strip())
        stack.append((indent, key))
    return flat


def _pick_cv2_build(flat: Dict[str, str]) -> Dict[str, str]:
    picked = {}  # type: Dict[str, str]
    for out_key, line_key, section in CV2_BUILD_KEYS:
        for path, value in flat.items():
            parent, _, last = path.rpartition("/")
            if last == line_key and (section is None or section in parent):
                picked[out_key] = value
                break
    return picked


def _cv2_cpu_features(cv2: Any) -> Dict[str, bool]:
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i386", "i686", "x86")
    table = CV2_CPU_FEATURES_X86 if x86 else CV2_CPU_FEATURES_OTHER
    return {name: bool(cv2.checkHardwareSupport(fid)) for name, fid in table}


def _cv2_opencl(cv2: Any) -> Dict[str, Any]:
    ocl = cv2.ocl
    return {"have": bool(ocl.haveOpenCL()), "use": bool(ocl.useOpenCL())}


def probe_cv2(cv2: Any, preloaded: bool) -> Optional[Dict[str, Any]]:
    if cv2 is None:
        return None
    text = _safe(cv2.getBuildInformation)
    build = _safe(lambda: _pick_cv2_build(parse_cv2_build_information(text)))
    return {
        "version": _safe(lambda: cv2.__version__),
        "file": _safe(lambda: getattr(cv2, "__file__", None)),
        "preloaded": preloaded,
        "build_information": text,
        "build": build,
        "threads": _safe(cv2.getNumThreads),
        "cpu_count": _safe(cv2.getNumberOfCPUs),
        "use_optimized": _safe(cv2.useOptimized),
        "cpu_features": _safe(_cv2_cpu_features, cv2),
        "cpu_features_line": _safe(lambda: cv2.getCPUFeaturesLine()),
        "opencl": _safe(_cv2_opencl, cv2),
    }


def probe_cv2_unused() -> Optional[Dict[str, Any]]:
    """cv2 as installed, for a pipeline that never imported it: not imported here either.
    Its build cannot have moved an output (nor can its dispatch settings be a cause), and
    importing it costs every such container about 0.3 s."""
    spec = importlib.util.find_spec("cv2")
    if spec is None:
        return None
    return {"version": None, "file": spec.origin, "preloaded": False, "imported": False}


# --------------------------------------------------------------------------
# loaded libraries and their packages


def mapped_files(text: str) -> List[str]:
    """Every file a ``/proc/<pid>/maps`` text maps, sorted."""
    files = set()
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if path.startswith("/"):
            files.add(path)
    return sorted(files)


def shared_libraries(files: Iterable[str]) -> List[str]:
    """The shared objects (``*.so``, ``*.so.N...``) among mapped files, sorted."""
    return sorted({p for p in files if SO_NAME_RE.search(os.path.basename(p))})


def parse_maps(text: str) -> List[str]:
    return shared_libraries(mapped_files(text))


def probe_loaded_libraries() -> List[str]:
    return parse_maps(_read_text("/proc/self/maps"))


def _usr_merge_variant(path: str) -> Optional[str]:
    if path.startswith("/usr/"):
        rest = path[4:]
        if rest.startswith(USR_MERGED_DIRS):
            return rest
        return None
    if path.startswith(USR_MERGED_DIRS):
        return "/usr" + path
    return None


def path_variants(path: str) -> List[str]:
    """The spellings dpkg may have listed a loaded library under."""
    out = []  # type: List[str]
    for base in (path, os.path.realpath(path)):
        for candidate in (base, _usr_merge_variant(base)):
            if candidate and candidate not in out:
                out.append(candidate)
    return out


def _dpkg_list_files() -> List[tuple]:
    """[(package, [listed paths])] read once from the dpkg database."""
    files = []
    for list_file in sorted(glob.glob(DPKG_INFO_GLOB)):
        package = os.path.basename(list_file)[: -len(".list")].split(":", 1)[0]
        with contextlib.suppress(OSError):
            files.append((package, _read_text(list_file).splitlines()))
    return files


def _so_stem(path: str) -> str:
    return os.path.basename(path).split(".so", 1)[0]


def _resolve_direct(
    listed: List[tuple], wanted: Dict[str, List[str]], result: Dict[str, Optional[str]]
) -> None:
    keys = set(wanted)
    for package, lines in listed:
        for hit in keys.intersection(lines):
            for lib in wanted[hit]:
                if result.get(lib) is None:
                    result[lib] = package


def _resolve_symlinked(listed: List[tuple], result: Dict[str, Optional[str]]) -> None:
    """Second pass: dpkg-listed paths whose realpath is an unresolved library."""
    missing = {os.path.realpath(p): p for p, pkg in result.items() if pkg is None}
    stems = {_so_stem(p) for p in missing}
    for package, lines in listed:
        for line in [x for x in lines if ".so" in x]:
            if _so_stem(line) not in stems:
                continue
            lib = missing.get(os.path.realpath(line))
            if lib is not None and result[lib] is None:
                result[lib] = package


def probe_library_packages(libraries: Iterable[str]) -> Dict[str, Optional[str]]:
    """{loaded library: owning dpkg package or None}."""
    libs = list(libraries)
    result = dict.fromkeys(libs)  # type: Dict[str, Optional[str]]
    if not glob.glob(DPKG_INFO_GLOB):
        return result
    wanted = {}  # type: Dict[str, List[str]]
    for lib in libs:
        for variant in path_variants(lib):
            wanted.setdefault(variant, []).append(lib)
    listed = _dpkg_list_files()
    _resolve_direct(listed, wanted, result)
    if any(pkg is None for pkg in result.values()):
        _resolve_symlinked(listed, result)
    return result


# --------------------------------------------------------------------------
# packages


def _dpkg_query() -> Dict[str, str]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=20,
        text=True,
    ).stdout
    packages = {}  # type: Dict[str, str]
    for line in out.splitlines():
        fields = line.split("\t")
        # Status-Abbrev: second letter "i" means installed (not config-files only).
        if len(fields) == 3 and fields[0][1:2] == "i":
            packages[fields[1].split(":", 1)[0]] = fields[2]
    return packages


def _dpkg_status_file() -> Dict[str, str]:
    packages = {}  # type: Dict[str, str]
    for stanza in _read_text(DPKG_STATUS).split("\n\n"):
        fields = {}  # type: Dict[str, str]
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "\t")):
                fields[key] = value.strip()
        if fields.get("Package") and " installed" in " " + fields.get("Status", ""):
            packages[fields["Package"]] = fields.get("Version", "")
    return packages


def probe_dpkg() -> Dict[str, str]:
    try:
        return dict(sorted(_dpkg_query().items()))
    except (OSError, subprocess.SubprocessError):
        if not os.path.exists(DPKG_STATUS):
            raise
        return dict(sorted(_dpkg_status_file().items()))


def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name_version(dist: Any) -> tuple:
    """Name and version from the metadata headers, without a full email parse."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break
        if line.startswith("Name:") and name is None:
            name = line[5:].strip()
        elif line.startswith("Version:") and version is None:
            version = line[8:].strip()
    if name is None:
        name, version = dist.metadata["Name"], dist.version
    return name, version


def probe_pip() -> Dict[str, str]:
    from importlib import metadata

    packages = {}  # type: Dict[str, str]
    for dist in metadata.distributions():
        with contextlib.suppress(Exception):
            name, version = _dist_name_version(dist)
            if name:
                packages.setdefault(_normalise_name(name), version)
    return dict(sorted(packages.items()))


def probe_packages() -> Dict[str, Any]:
    return {"dpkg": _safe(probe_dpkg), "pip": _safe(probe_pip)}


# --------------------------------------------------------------------------
# environment and BLAS


def probe_env() -> Dict[str, str]:
    return {
        k: v for k, v in sorted(os.environ.items()) if k in ENV_NAMES or k.startswith(ENV_PREFIXES)
    }


def _numpy_blas_config(numpy_info: Any) -> Any:
    if not isinstance(numpy_info, dict):
        return None
    config = numpy_info.get("config")
    if not isinstance(config, dict):
        return config
    deps = config.get("Build Dependencies")
    if isinstance(deps, dict):  # numpy >= 1.25
        return {k: deps.get(k) for k in ("blas", "lapack")}
    info = config.get("info")
    if isinstance(info, dict):  # older numpy: the *_info dicts
        return {k: v for k, v in info.items() if BLAS_LIB_RE.search(k) and v}
    return None


def _openblas_runtime(path: str) -> Optional[Dict[str, Any]]:
    """OpenBLAS's own report (config string, core chosen at run time)."""
    import ctypes

    lib = ctypes.CDLL(path)
    for prefix in OPENBLAS_SYMBOL_PREFIXES:
        for suffix in OPENBLAS_SYMBOL_SUFFIXES:
            get_config = getattr(lib, prefix + "get_config" + suffix, None)
            if get_config is None:
                continue
            get_config.restype = ctypes.c_char_p
            result = {"config": get_config().decode("utf-8", "replace")}  # type: Dict[str, Any]
            corename = getattr(lib, prefix + "get_corename" + suffix, None)
            if corename is not None:
                corename.restype = ctypes.c_char_p
                result["corename"] = corename().decode("utf-8", "replace")
            threads = getattr(lib, prefix + "get_num_threads" + suffix, None)
            if threads is not None:
                threads.restype = ctypes.c_int
                result["num_threads"] = threads()
            return result
    return None


def probe_blas(numpy_info: Any, libraries: Any) -> Dict[str, Any]:
    libs = libraries if isinstance(libraries, list) else []
    blas_libs = [p for p in libs if BLAS_LIB_RE.search(os.path.basename(p))]
    runtime = {}  # type: Dict[str, Any]
    for path in blas_libs:
        if "openblas" in os.path.basename(path).lower():
            info = _safe(_openblas_runtime, path)
            if info is not None:
                runtime[path] = info
    return {
        "numpy_config": _safe(_numpy_blas_config, numpy_info),
        "libraries": blas_libs,
        "openblas": runtime,
    }


# --------------------------------------------------------------------------
# a command pipeline's processes

# A mapped file that shows a Python process imported the module (when the process left no
# record of its sys.modules: it ended by os._exit or a signal, and was only sampled).
MODULE_FILES = {
    "numpy": re.compile(r"/numpy/(_?core)/_multiarray_umath\.[^/]*$"),
    "cv2": re.compile(r"(^|/)cv2\.[^/]*\.so$"),
}
PROCESSES_LISTED = 32


def _imported_by(processes: List[Dict[str, Any]], name: str) -> bool:
    pattern = MODULE_FILES[name]
    return any(
        name in (p.get("modules") or {}) or any(pattern.search(f) for f in p.get("files") or ())
        for p in processes
    )


def probe_pipeline_processes(processes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The command's processes, in the order they started (at most PROCESSES_LISTED)."""
    ordered = sorted(processes, key=lambda p: (int(p.get("start") or 0), int(p.get("pid") or 0)))
    listed = [
        {
            "pid": p.get("pid"),
            "executable": p.get("executable"),
            "argv": p.get("argv"),
            "emulated": p.get("emulated"),
            "seen": sorted(p.get("seen") or ()),
            "python": p.get("python"),
            "modules": p.get("modules") or {},
            "libraries": len(shared_libraries(p.get("files") or ())),
        }
        for p in ordered[:PROCESSES_LISTED]
    ]
    return {"count": len(processes), "listed": listed}


# --------------------------------------------------------------------------
# extra modules


def _module_version(name: str) -> Any:
    module = importlib.import_module(name)
    version = getattr(module, "__version__", None)
    if version is None:
        from importlib import metadata

        with contextlib.suppress(Exception):
            version = metadata.version(name)
    return {"version": version, "file": getattr(module, "__file__", None)}


def probe_modules(names: Iterable[str]) -> Dict[str, Any]:
    return {name: _safe(_module_version, name) for name in names}


# --------------------------------------------------------------------------
# entry point


def _collect(
    extra_modules: Iterable[str], processes: Optional[List[Dict[str, Any]]]
) -> Dict[str, Any]:
    extra = {}  # type: Dict[str, Any]
    if processes is None:  # a callable: this process is the pipeline's
        np_preloaded = "numpy" in sys.modules
        cv2_preloaded = "cv2" in sys.modules
        libraries = _safe(probe_loaded_libraries)  # before the imports below add theirs
    else:  # a command: only its own processes count
        libraries = _safe(lambda: shared_libraries(f for p in processes for f in p["files"]))
        np_preloaded = _imported_by(processes, "numpy")
        cv2_preloaded = _imported_by(processes, "cv2")
        extra["pipeline_processes"] = _safe(probe_pipeline_processes, processes)
    np = _import("numpy")
    numpy_info = _safe(probe_numpy, np, np_preloaded)
    # cv2 in full only when the pipeline imported it (importing it costs 0.3 s)
    cv2_info = _safe(probe_cv2, _import("cv2"), True) if cv2_preloaded else _safe(probe_cv2_unused)
    lib_list = libraries if isinstance(libraries, list) else []
    return {
        **extra,
        "os": _safe(probe_os),
        "kernel": _safe(probe_kernel),
        "machine": _safe(platform.machine),
        "glibc": _safe(probe_glibc),
        "python": _safe(probe_python),
        "numpy": numpy_info,
        "cv2": cv2_info,
        "cpu": _safe(probe_cpu),
        "loaded_libraries": libraries,
        "packages": _safe(probe_packages),
        "library_packages": _safe(probe_library_packages, lib_list),
        "env": _safe(probe_env),
        "blas": _safe(probe_blas, numpy_info, libraries),
        "modules": _safe(probe_modules, list(extra_modules)),
    }


def collect(
    extra_modules: Iterable[str] = (), processes: Optional[List[Dict[str, Any]]] = None
) -> Dict[str, Any]:
    """Gather the environment fingerprint as a JSON-serialisable dict.

    ``extra_modules`` names further modules to import and report (version and
    file) under ``"modules"``.  ``processes`` (a command pipeline's processes,
    each with ``"files"`` it mapped and the ``"modules"`` it imported) replaces
    this process as the source of ``loaded_libraries`` and of numpy's and cv2's
    ``preloaded``, and is summarised under ``"pipeline_processes"``.  Never raises.
    """
    try:
        return _jsonable(_collect(extra_modules, processes))
    except Exception as exc:  # last resort: still hand back a dict
        return {"error": _error(exc)}


if __name__ == "__main__":
    print(json.dumps(collect(sys.argv[1:]), indent=2, sort_keys=True))
