"""Writes fixtures/batch_*.csv: 8 features and a class label (0-3) per row. Standard
library only, seeded, so the files it writes are always the same."""

import random
from pathlib import Path

# The rule that labels the rows (model.py's first layer has learned it); noise makes some
# rows hard, so the model's accuracy is not 100 %.
TEACHER = [
    [2, -1, 0, 1],
    [-1, 2, 1, 0],
    [0, 1, -2, 1],
    [1, 0, 1, -2],
    [1, 1, -1, 0],
    [0, -1, 1, 1],
    [-1, 0, 0, 1],
    [1, -1, 1, 0],
]


def main() -> None:
    rng = random.Random(20240501)
    folder = Path(__file__).parent / "fixtures"
    folder.mkdir(exist_ok=True)
    for batch in (1, 2, 3):
        lines = [",".join([f"f{i}" for i in range(8)] + ["label"])]
        for _ in range(80):
            x = [round(rng.gauss(0.0, 1.0), 3) for _ in range(8)]
            scores = [
                sum(x[i] * TEACHER[i][c] for i in range(8)) + rng.gauss(0.0, 1.5) for c in range(4)
            ]
            lines.append(",".join([f"{v:.3f}" for v in x] + [str(scores.index(max(scores)))]))
        (folder / f"batch_{batch}.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
