"""Progress events: the library reports through a callback, the CLI renders them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Stage = Literal[
    "bootstrap", "pull", "push", "build", "run", "collect", "compare", "report", "explain"
]


@dataclass(frozen=True, kw_only=True)
class ProgressEvent:
    stage: Stage
    subject: str  # environment or image the event is about
    message: str
    done: int | None = None
    total: int | None = None
    finished: bool = False


ProgressCallback = Callable[[ProgressEvent], None]


def silent(_event: ProgressEvent) -> None:
    """The default callback: the library never prints."""
