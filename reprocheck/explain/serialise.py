"""explain.json's attributions and experiments: plain JSON (the enums are strings)."""

from __future__ import annotations

import dataclasses
from typing import Any

from reprocheck.explain.model import Explanation


def attributions_json(explanation: Explanation) -> list[dict[str, Any]]:
    return [dataclasses.asdict(a) for a in explanation.attributions]


def experiments_json(explanation: Explanation) -> list[dict[str, Any]]:
    return [
        {
            "kind": e.kind,
            "factor": e.factor,
            "environment": e.environment,
            "sides": e.sides,
            "description": e.describe(),
            "status": e.status,
            "cached": e.cached,
            "seconds": e.seconds,
        }
        for e in explanation.experiments
    ]
