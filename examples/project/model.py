"""The pipeline reprocheck runs in every environment: a small fixed classifier (8 features,
two layers of 64 tanh units, 4 classes) in float32, applied to one fixture file at a time.

Python >= 3.9, the standard library and numpy only: it runs inside the containers."""

import numpy as np


def _weights(rows, cols, a, b, scale):
    """Small fixed weights, exact in float32, the same in every environment."""
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (((i * a + j * b) % 9 - 4) * scale).astype(np.float32)


# The "trained" weights: the first layer has learned the rule that labelled the fixtures
# (make_fixtures.py), the others mostly pass it on. Only the arithmetic below can differ.
_TEACHER = np.array(
    [
        [2, -1, 0, 1],
        [-1, 2, 1, 0],
        [0, 1, -2, 1],
        [1, 0, 1, -2],
        [1, 1, -1, 0],
        [0, -1, 1, 1],
        [-1, 0, 0, 1],
        [1, -1, 1, 0],
    ]
)
W1 = np.hstack([_TEACHER * 0.5, _weights(8, 60, 7, 13, 1 / 16)]).astype(np.float32)
B1 = _weights(1, 64, 0, 5, 1 / 32)[0]
W2 = (np.eye(64) + _weights(64, 64, 17, 29, 1 / 128)).astype(np.float32)
B2 = _weights(1, 64, 0, 3, 1 / 64)[0]
W3 = np.vstack([5.0 * np.eye(4), _weights(60, 4, 11, 3, 1 / 32)]).astype(np.float32)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run(path):
    """One fixture (a CSV of f0..f7 and a label per row): each row's class probabilities
    and the accuracy of the predicted classes."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    features = table[:, :8].astype(np.float32)
    labels = table[:, 8].astype(np.int64)
    hidden = np.tanh(features @ W1 + B1)
    hidden = np.tanh(hidden @ W2 + B2)  # a 64 x 64 float32 matmul: BLAS kernels differ
    probabilities = softmax(hidden @ W3)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    return {"probabilities": probabilities, "accuracy": accuracy}
