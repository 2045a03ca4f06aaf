"""SVG chart geometry for the numbers page: the bars are computed here, drawn by the template
(so every label goes through Jinja's escaping). No JavaScript, no chart library."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Bar", "BarChart", "column_chart", "row_chart"]


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int
    title: str


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    top: int


def column_chart(
    values: Sequence[tuple[str, int]],
    *,
    width: int = 420,
    height: int = 150,
    axis: int = 18,
    labels: int = 8,
) -> BarChart:
    """Vertical bars, one per value (e.g. orders per day), on a shared scale; ``axis`` pixels
    at the bottom are left for labels, at most ``labels`` of them (evenly spread)."""
    top = max((v for _, v in values), default=0)
    count = max(1, len(values))
    every = -(-count // labels)
    slot = width / count
    usable = height - axis - 14
    bars = []
    for i, (label, value) in enumerate(values):
        h = usable * value / top if top else 0.0
        bars.append(
            Bar(
                x=round(i * slot + slot * 0.1, 1),
                y=round(height - axis - h, 1),
                width=round(slot * 0.8, 1),
                height=round(h, 1),
                label=label if i % every == 0 else "",
                value=value,
                title=f"{label}: {value}",
            )
        )
    return BarChart(width, height, tuple(bars), top)


def row_chart(
    values: Sequence[tuple[str, int]], *, width: int = 420, row: int = 22, label: int = 150
) -> BarChart:
    """Horizontal bars, one row per value (e.g. conversations reaching each step), with
    ``label`` pixels on the left for the names."""
    top = max((v for _, v in values), default=0)
    usable = width - label - 40
    bars = []
    for i, (name, value) in enumerate(values):
        w = usable * value / top if top else 0.0
        bars.append(
            Bar(
                x=label,
                y=i * row + 4,
                width=round(w, 1),
                height=row - 8,
                label=name,
                value=value,
                title=f"{name}: {value}",
            )
        )
    return BarChart(width, max(row, row * len(values)) + 4, tuple(bars), top)
