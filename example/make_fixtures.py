"""Regenerate the example fixtures and the tiny ONNX model.

Run from anywhere on the host (Python 3.11, numpy, opencv-python-headless, onnx):

    python example/make_fixtures.py

Everything is derived from fixed seeds, so running it twice produces byte-identical
files (with the same versions of OpenCV, zlib and onnx). Writes:

    fixtures/photo_baseline.jpg         baseline JPEG, 4:2:0, quality 90
    fixtures/photo_progressive.jpg      progressive JPEG, complete
    fixtures/damaged_baseline.jpg       baseline JPEG with restart markers, a few
                                        entropy-coded bytes overwritten
    fixtures/truncated_progressive.jpg  progressive JPEG cut in the middle of an AC scan
    fixtures/texture.png                8-bit BGR PNG: fine texture, text, zone plate
    fixtures/gradient16.png             16-bit greyscale PNG: smooth gradients + noise
    example/tiny_cnn.onnx               1x3x32x32 -> 10-way softmax, seeded weights
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "fixtures"
MODEL = HERE / "tiny_cnn.onnx"

SOI, SOS, EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


# --------------------------------------------------------------------------- images


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled by pure numpy."""
    grid = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    # smoothstep weights look less "bilinear"
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def make_scene(seed: int, h: int, w: int, text: str) -> np.ndarray:
    """A natural-looking synthetic 8-bit BGR image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    # sky-to-ground style gradient per channel plus soft clouds
    img = np.empty((h, w, 3), np.float64)
    for ch in range(3):
        angle = rng.uniform(0, np.pi)
        ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) * 0.5 + 0.25
        img[..., ch] = 255 * (0.55 * ramp + 0.45 * _smooth_noise(rng, h, w, 4))

    # fine periodic texture in one region (fabric / grass like)
    tex = 0.5 + 0.5 * np.sin(xx * rng.uniform(1.2, 1.6)) * np.sin(yy * rng.uniform(0.9, 1.3))
    mask = (xx > w * 0.55) & (yy > h * 0.6)
    img[mask] = img[mask] * 0.5 + 110 * tex[mask][:, None]

    # zone plate (chirp) in the top-left corner: a classic aliasing trap for resizing
    r2 = (xx - w * 0.2) ** 2 + (yy - h * 0.25) ** 2
    zone = 0.5 + 0.5 * np.cos(r2 * (np.pi / (w * 0.9)))
    zmask = r2 < (min(h, w) * 0.2) ** 2
    img[zmask] = 255 * zone[zmask][:, None]

    out = np.clip(img, 0, 255).astype(np.uint8)

    # shapes with anti-aliased edges
    for _ in range(6):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.circle(out, (cx, cy), int(rng.integers(6, h // 4)), colour, -1, cv2.LINE_AA)
        elif kind == 1:
            x2, y2 = cx + int(rng.integers(10, w // 3)), cy + int(rng.integers(10, h // 3))
            cv2.rectangle(out, (cx, cy), (x2, y2), colour, -1, cv2.LINE_8)
        else:
            pts = rng.integers(0, [w, h], size=(4, 2)).astype(np.int32)
            cv2.polylines(out, [pts], True, colour, 2, cv2.LINE_AA)
    cv2.putText(
        out, text, (6, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (250, 250, 250), 1, cv2.LINE_AA
    )
    cv2.putText(out, text, (5, h - 11), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 30), 1, cv2.LINE_AA)

    # sensor-like noise
    noisy = out.astype(np.int16) + np.round(rng.normal(0, 4.0, out.shape)).astype(np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_gradient16(seed: int, h: int, w: int) -> np.ndarray:
    """16-bit greyscale: smooth gradients with content below the 8-bit quantisation step."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 0.6 * (xx / (w - 1)) + 0.25 * _smooth_noise(rng, h, w, 3)
    ring = 0.12 * np.exp(-(((xx - w * 0.6) ** 2 + (yy - h * 0.4) ** 2) / (2 * (w * 0.15) ** 2)))
    val = (base + ring) * 65535 / 1.0 + rng.normal(0, 40.0, (h, w))
    return np.clip(np.round(val), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- JPEG surgery


def _encode(img: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, params)
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def _scan_ranges(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the entropy-coded data of every scan (after each SOS header)."""
    ranges = []
    pos = 0
    while True:
        sos = data.find(SOS, pos)
        if sos < 0:
            break
        seg_len = int.from_bytes(data[sos + 2 : sos + 4], "big")
        start = sos + 2 + seg_len
        # the scan ends at the next marker that is neither a stuffed 0xFF00 nor RSTn
        i = start
        while True:
            i = data.index(b"\xff", i)
            nxt = data[i + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                i += 2
                continue
            break
        ranges.append((start, i))
        pos = i
    return ranges


def damage(data: bytes, seed: int, n_bytes: int) -> bytes:
    """Overwrite a few bytes of entropy-coded data, never creating or breaking a marker."""
    rng = np.random.default_rng(seed)
    ((start, end),) = _scan_ranges(data)
    buf = bytearray(data)
    lo, hi = start + (end - start) // 4, end - (end - start) // 5
    done = 0
    while done < n_bytes:
        i = int(rng.integers(lo, hi))
        if buf[i] == 0xFF or buf[i - 1] == 0xFF or buf[i + 1] == 0x00:
            continue
        new = int(rng.integers(0, 255))  # 0..254, never 0xFF
        if new == buf[i]:
            continue
        buf[i] = new
        done += 1
    return bytes(buf)


def truncate_in_scan(data: bytes, scan_index: int, fraction: float) -> bytes:
    """Cut the file inside the entropy-coded data of scan `scan_index` (no EOI)."""
    start, end = _scan_ranges(data)[scan_index]
    cut = start + int((end - start) * fraction)
    while data[cut - 1] == 0xFF:  # do not end on half a marker / stuffed byte
        cut -= 1
    return data[:cut]


# --------------------------------------------------------------------------- model


def make_model(seed: int) -> onnx.ModelProto:
    """Tiny CNN: 1x3x32x32 -> Conv3x3(8) Relu MaxPool -> Conv3x3(16) Relu MaxPool
    -> Flatten -> Gemm(10) -> Softmax. Opset 11, IR 6, static shapes."""
    rng = np.random.default_rng(seed)

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    w1 = he((8, 3, 3, 3), 27)
    b1 = (rng.standard_normal(8) * 0.05).astype(np.float32)
    w2 = he((16, 8, 3, 3), 72)
    b2 = (rng.standard_normal(16) * 0.05).astype(np.float32)
    w3 = (rng.standard_normal((10, 16 * 8 * 8)) * np.sqrt(6.0 / 1024)).astype(np.float32)
    b3 = (rng.standard_normal(10) * 0.1).astype(np.float32)

    inits = [
        numpy_helper.from_array(w1, "conv1.w"),
        numpy_helper.from_array(b1, "conv1.b"),
        numpy_helper.from_array(w2, "conv2.w"),
        numpy_helper.from_array(b2, "conv2.b"),
        numpy_helper.from_array(w3, "fc.w"),
        numpy_helper.from_array(b3, "fc.b"),
    ]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", **pool),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", **pool),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten", axis=1),
        helper.make_node(
            "Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", alpha=1.0, beta=1.0, transB=1
        ),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="reprocheck-example",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", 11)],
    )
    model.ir_version = 6
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- main


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"{hashlib.sha256(data).hexdigest()[:16]}  {len(data):7d}  {path.relative_to(ROOT)}")


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("cv2.imencode(.png) failed")
    return buf.tobytes()


def main() -> None:
    jpeg_q = cv2.IMWRITE_JPEG_QUALITY

    photo = make_scene(1, 192, 256, "reprocheck 1.0")
    _write(FIXTURES / "photo_baseline.jpg", _encode(photo, [jpeg_q, 90]))

    prog = make_scene(2, 160, 224, "progressive")
    _write(
        FIXTURES / "photo_progressive.jpg",
        _encode(prog, [jpeg_q, 88, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    )

    dmg = make_scene(3, 120, 160, "damaged")
    clean = _encode(dmg, [jpeg_q, 92, cv2.IMWRITE_JPEG_RST_INTERVAL, 4])
    _write(FIXTURES / "damaged_baseline.jpg", damage(clean, seed=33, n_bytes=5))

    trunc = make_scene(4, 144, 192, "truncated")
    full = _encode(trunc, [jpeg_q, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    # libjpeg's default progressive script has 10 scans for colour images; cut inside
    # the 5th one (a luma AC refinement): the lower scans are complete, so the decoder
    # has to synthesise the missing coefficients (block smoothing).
    _write(FIXTURES / "truncated_progressive.jpg", truncate_in_scan(full, 4, 0.5))

    tex = make_scene(5, 96, 128, "Ag 7/8 #")
    yy, xx = np.mgrid[0:96, 0:128]
    checker = (((xx // 2) + (yy // 2)) % 2).astype(bool)
    tex[:24, 96:][checker[:24, 96:]] = 255 - tex[:24, 96:][checker[:24, 96:]]
    _write(FIXTURES / "texture.png", _png(tex))

    _write(FIXTURES / "gradient16.png", _png(make_gradient16(6, 128, 128)))

    _write(MODEL, make_model(7).SerializeToString())


if __name__ == "__main__":
    main()
