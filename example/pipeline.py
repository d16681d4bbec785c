"""Example reprocheck pipeline: one image in, a dict of named numeric outputs out.

Runs inside the OS images (Python >= 3.9, numpy >= 1.19, OpenCV >= 4.5.1) and on the
host. Only the standard library, numpy and cv2 are used.

Every output name is ``stage/detail``. Each stage reads inputs produced by numpy-only
or integer-exact code where possible, so a difference in, say, ``dnn/probabilities``
points at the dnn module rather than at an upstream resize.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import sys

import cv2
import numpy as np

try:
    import reprocheck_probe as probe
except ImportError:
    probe = None

# os.path on purpose: the model sits next to this file wherever the project is mounted
MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_cnn.onnx")  # noqa: PTH100, PTH118, PTH120

_NET = None
_LIBM = None

# C math library functions called directly through ctypes. glibc has replaced several
# of them between the Debian releases (e.g. tgamma after 2.31, correctly rounded
# CORE-MATH float functions and a new exp10 in 2.41), so this row drifts by design.
_LIBM_DOUBLE = ("tgamma", "lgamma", "erf", "exp10", "j0", "y0", "cbrt", "asinh")
_LIBM_FLOAT = ("tgammaf", "lgammaf", "erfcf", "j1f", "y1f", "cbrtf", "sinhf", "atanhf")


def _record(name, value):
    if probe is not None:
        probe.record(name, value)


def _net():
    global _NET
    if _NET is None:
        _NET = cv2.dnn.readNetFromONNX(MODEL_PATH)
    return _NET


# --------------------------------------------------------------------------- decode


def _imread_with_warnings(path):
    """cv2.imread(IMREAD_UNCHANGED) while capturing what libjpeg/libpng print on fd 2.

    Corrupt or truncated JPEGs decode partially with warnings such as
    "Premature end of JPEG file"; their number is an output. A pipe (not a temp file)
    is used so this works in read-only containers; its write end is non-blocking so a
    flood of warnings can never deadlock (the excess is dropped).
    """
    with contextlib.suppress(AttributeError, ValueError):
        sys.stderr.flush()
    try:
        rd, wr = os.pipe()
    except OSError:
        return cv2.imread(path, cv2.IMREAD_UNCHANGED), ""
    saved = os.dup(2)
    try:
        os.set_blocking(wr, False)
        os.dup2(wr, 2)
        try:
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        finally:
            os.dup2(saved, 2)
            os.close(wr)
        chunks = []
        while True:
            chunk = os.read(rd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(saved)
        os.close(rd)
    text = b"".join(chunks).decode("utf-8", "replace")
    if text:  # pass the messages on, so they are still visible in logs
        with contextlib.suppress(AttributeError, ValueError):
            sys.stderr.write(text)
            sys.stderr.flush()
    return img, text


def _to_bgr8(img):
    """Decoded array (8/16-bit, 1/3/4 channels) -> 8-bit BGR, integer-exact."""
    if img.dtype == np.uint16:
        # round(v * 255 / 65535) in integer arithmetic
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported sample type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


# --------------------------------------------------------------------------- stages


def _resize(bgr, out):
    h, w = bgr.shape[:2]
    # a non-integer scale factor (~0.6) exercises the general (non-2x) code paths
    dsize = (max(8, w * 3 // 5 + 1), max(8, h * 3 // 5 + 1))
    out["resize/linear"] = cv2.resize(bgr, dsize, interpolation=cv2.INTER_LINEAR)
    out["resize/linear_exact"] = cv2.resize(bgr, dsize, interpolation=cv2.INTER_LINEAR_EXACT)
    out["resize/cubic"] = cv2.resize(bgr, dsize, interpolation=cv2.INTER_CUBIC)
    out["resize/area"] = cv2.resize(bgr, dsize, interpolation=cv2.INTER_AREA)
    out["resize/lanczos4"] = cv2.resize(bgr, dsize, interpolation=cv2.INTER_LANCZOS4)
    f32 = bgr.astype(np.float32) * np.float32(1.0 / 255.0)
    out["resize/linear_f32"] = cv2.resize(f32, dsize, interpolation=cv2.INTER_LINEAR)
    out["resize/cubic_up_f32"] = cv2.resize(f32[:48, :48], (77, 77), interpolation=cv2.INTER_CUBIC)
    _record("after_resize", out["resize/linear"])


def _color(bgr, out):
    f32 = bgr.astype(np.float32) * np.float32(1.0 / 255.0)
    out["color/gray"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    out["color/hsv"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    out["color/hsv_f32"] = cv2.cvtColor(f32, cv2.COLOR_BGR2HSV)
    out["color/lab"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)
    out["color/lab_f32"] = cv2.cvtColor(f32, cv2.COLOR_BGR2Lab)
    out["color/yuv"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    _record("lab_f32", out["color/lab_f32"])


def _filters(gray, out):
    grayf = gray.astype(np.float32) * np.float32(1.0 / 255.0)
    out["filter/gaussian_u8"] = cv2.GaussianBlur(gray, (5, 5), 1.2)
    out["filter/gaussian_f32"] = cv2.GaussianBlur(grayf, (0, 0), 1.7)
    out["filter/sobel_f32"] = cv2.Sobel(grayf, cv2.CV_32F, 1, 0, ksize=3)
    out["filter/laplacian_f32"] = cv2.Laplacian(grayf, cv2.CV_32F, ksize=3)
    out["filter/bilateral"] = cv2.bilateralFilter(gray, 5, 40.0, 3.0)
    out["edges/canny"] = cv2.Canny(gray, 60, 150)
    _record("blurred", out["filter/gaussian_f32"])
    _record("edges", out["edges/canny"])


def _keypoints(gray, out):
    orb = cv2.ORB_create(nfeatures=120, nlevels=4, fastThreshold=12)
    kps, desc = orb.detectAndCompute(gray, None)
    rows = np.array(
        [[k.pt[0], k.pt[1], k.size, k.angle, k.response, k.octave] for k in kps], dtype=np.float32
    ).reshape(-1, 6)
    if desc is None:
        desc = np.zeros((0, 32), np.uint8)
    # deterministic order: by x, then y, then the other columns
    order = np.lexsort(rows.T[::-1])
    out["keypoints/orb"] = rows[order]
    out["keypoints/orb_descriptors"] = desc[order]

    corners = cv2.goodFeaturesToTrack(gray, maxCorners=40, qualityLevel=0.01, minDistance=5)
    corners = np.zeros((0, 2), np.float32) if corners is None else corners.reshape(-1, 2)
    out["keypoints/corners"] = corners[np.lexsort(corners.T[::-1])]


def _blocks(gray, n):
    """n x n float64 matrix of block means of the top-left square (numpy only: exact)."""
    side = min(gray.shape) // n * n
    b = side // n
    sq = gray[:side, :side].astype(np.float64)
    return sq.reshape(n, b, n, b).mean(axis=(1, 3)) / 255.0


def _linalg(gray, out):
    a = _blocks(gray, 24)
    out["linalg/svd"] = np.linalg.svd(a, compute_uv=False)
    s = a.T @ a + 0.5 * np.eye(24)
    out["linalg/eigh"] = np.linalg.eigvalsh(s)
    out["linalg/solve"] = np.linalg.solve(s, a.sum(axis=0))
    a32 = a.astype(np.float32)
    out["linalg/gemm_f32"] = a32 @ a32.T


def _libm(gray, out):
    v = gray.ravel().astype(np.float64)
    v = v[:: max(1, v.size // 256)][:256] / 255.0  # 256 values in [0, 1]
    out["libm/transcendental"] = np.stack(
        [
            np.exp(v * 40.0 - 20.0),
            np.log(v + 1e-3),
            np.log10(v * 7.0 + 0.01),
            np.expm1(v * 3.0 - 1.5),
            np.sin(v * 1000.0 + 0.1),
            np.cos(v * 1e6 + 0.3),
            np.tan(v * 3.0 - 1.5),
            np.tanh(v * 6.0 - 3.0),
            np.arctan2(v - 0.5, v + 0.25),
            np.arcsinh(v * 100.0),
            np.cbrt(v * 50.0 - 20.0),
            np.power(v + 0.5, 2.7),
        ]
    )
    rows = []
    for x in v[:64].tolist():
        rows.append(
            [
                math.lgamma(1.0 + 10.0 * x),
                math.gamma(0.5 + 5.0 * x),
                math.erf(3.0 * x - 1.5),
                math.erfc(4.0 * x),
                math.pow(x + 0.3, 3.3),
                math.exp(x * 30.0 - 15.0),
                math.log1p(x * 9.0),
                math.sin(x * 1e4),
                math.atan2(x - 0.3, 0.7),
                math.sinh(x * 5.0),
                math.acosh(1.0 + x * 4.0),
            ]
        )
    out["libm/math_module"] = np.array(rows, dtype=np.float64)

    # float32 ufuncs: without AVX-512, numpy hands most of these to libm's *f functions
    f = (v * 4.0).astype(np.float32)
    out["libm/numpy_float32"] = np.stack(
        [
            np.arcsinh(f),
            np.cbrt(f - np.float32(1.0)),
            np.expm1(f),
            np.log1p(f),
            np.arctan(f),
            np.sinh(f),
            np.cosh(f),
            np.tan(f * np.float32(0.35)),
            np.tanh(f),
        ]
    )
    out["libm/glibc_direct"] = _libm_direct(v[:64] * 6.0 + 0.05)


def _libm_direct(x):
    """Call the C library's math functions on each value of x (NaN where unavailable)."""
    global _LIBM
    if _LIBM is None:
        _LIBM = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    cols = []
    for names, ctype in ((_LIBM_DOUBLE, ctypes.c_double), (_LIBM_FLOAT, ctypes.c_float)):
        for name in names:
            fn = getattr(_LIBM, name, None)
            if fn is None:
                cols.append(np.full(x.size, np.nan))
                continue
            fn.restype = ctype
            fn.argtypes = [ctype]
            arg = x / 7.0 if name == "atanhf" else x  # atanh needs |x| < 1
            # float results are widened exactly, so one float64 array holds both kinds
            cols.append(np.array([fn(float(a)) for a in arg.tolist()], dtype=np.float64))
    return np.stack(cols, axis=1)


def _dnn(bgr, out):
    h, w = bgr.shape[:2]
    # nearest-neighbour 32x32 sampling by index arithmetic: exact everywhere, so any
    # drift in the probabilities comes from the dnn module itself
    ys = (np.arange(32) * h) // 32 + h // 64
    xs = (np.arange(32) * w) // 32 + w // 64
    small = bgr[ys][:, xs]
    blob = (small.astype(np.float32) * np.float32(1.0 / 255.0) - np.float32(0.5)) * np.float32(4.0)
    blob = np.ascontiguousarray(blob.transpose(2, 0, 1)[None])
    _record("dnn_input", blob)
    net = _net()
    net.setInput(blob)
    prob = np.array(net.forward(), dtype=np.float32).reshape(1, -1)
    out["dnn/probabilities"] = prob
    out["dnn/labels"] = int(np.argmax(prob[0]))


# --------------------------------------------------------------------------- entry


def run(path: str) -> dict:
    """Run the pipeline on one image file; return output name -> array or number.

    A file the decoder rejects entirely (cv2.imread returns None) yields only
    ``decode/ok`` = 0 and ``decode/warnings``, so that "decodes here, fails there"
    shows up as a difference instead of aborting the run.
    """
    if not os.path.isfile(path):  # noqa: PTH113
        raise ValueError(f"no such fixture file: {path}")
    img, messages = _imread_with_warnings(path)
    out = {"decode/warnings": sum(1 for line in messages.splitlines() if line.strip())}
    if img is None:
        out["decode/ok"] = 0
        return out
    out["decode/ok"] = 1
    out["decode/pixels"] = img
    _record("decoded", img)

    bgr = _to_bgr8(img)
    _record("bgr8", bgr)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    _record("gray", gray)

    _resize(bgr, out)
    _color(bgr, out)
    _filters(gray, out)
    _keypoints(gray, out)
    _linalg(gray, out)
    _libm(gray, out)
    _dnn(bgr, out)
    return out
