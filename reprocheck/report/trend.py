"""Drift per run as a small inline SVG for the HTML report: no plotting library, no PNG.

(matplotlib costs about two seconds per run just to draw this line; ``reprocheck history
--png`` still draws the full plot with it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 640, 180, 34
SHOWN = 60  # the most recent runs drawn


def trend_svg(points: Sequence[tuple[str, str, int]]) -> str | None:
    """``(started, run_id, drifting comparisons)`` per run, oldest first, as an SVG line
    chart with one titled point per run; None without runs."""
    points = list(points)[-SHOWN:]
    if not points:
        return None
    top = max(1, max(drift for _, _, drift in points))
    step = (WIDTH - 2 * PAD) / max(1, len(points) - 1)

    def x(i: int) -> float:
        return PAD + i * step if len(points) > 1 else WIDTH / 2

    def y(drift: int) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * drift / top

    line = " ".join(f"{x(i):.1f},{y(d):.1f}" for i, (_, _, d) in enumerate(points))
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(d):.1f}" r="3"><title>{escape(run)} '
        f"({escape(started[:16])}): {d:,} drifting</title></circle>"
        for i, (started, run, d) in enumerate(points)
    )
    axis = (f'<text x="{PAD - 6}" y="{y(top) + 4:.1f}" text-anchor="end">{top:,}</text>'
            f'<text x="{PAD - 6}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>'
            f'<text x="{PAD}" y="{HEIGHT - 8}">{escape(points[0][0][:16])}</text>'
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">'
            f"{escape(points[-1][0][:16])}</text>")  # fmt: skip
    return (
        f'<svg class="trend" role="img" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}"><title>drifting comparisons per run</title>'
        f'<line x1="{PAD}" y1="{y(0):.1f}" x2="{WIDTH - PAD}" y2="{y(0):.1f}" stroke="#999"/>'
        f'<polyline points="{line}" fill="none" stroke="#c33" stroke-width="2"/>'
        f"{dots}{axis}</svg>"
    )
