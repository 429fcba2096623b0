"""Small inline SVG charts for the batch report: no plotting library to import on every run, and the report
stays one self-contained file whose labels are text (searchable, sharp at any zoom)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

_FONT = 'font-family="sans-serif" font-size="11"'


def histogram(
    values: Sequence[float], lo: float, hi: float, bins: int, title: str, xlabel: str, color: str = "#4a78b5"
) -> str:
    """Counts of `values` in `bins` equal bins over [lo, hi]; a value at `hi` falls in the last bin."""
    counts = [0] * bins
    for v in values:
        i = int((min(max(v, lo), hi) - lo) / (hi - lo) * bins)
        counts[min(i, bins - 1)] += 1
    w, h, left, bottom, top = 540, 240, 44, 36, 26
    pw, ph = w - left - 12, h - bottom - top
    ymax = max(1, max(counts))
    parts = [_title(w, title)]
    for i, c in enumerate(counts):
        bh = ph * c / ymax
        x = left + pw * i / bins
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + ph - bh:.1f}" width="{pw / bins - 2:.1f}" height="{bh:.1f}" '
            f'fill="{color}"><title>{_num(lo + (hi - lo) * i / bins)}-{_num(lo + (hi - lo) * (i + 1) / bins)}: '
            f"{c}</title></rect>"
        )
    for k in sorted({0, ymax // 2, ymax}):  # y ticks
        y = top + ph - ph * k / ymax
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{k}</text>')
    parts.append(_x_axis(left, top, pw, ph, lo, hi, xlabel))
    return _svg(w, h, title, parts)


def hbars(
    labels: Sequence[str], values: Sequence[float], lo: float, hi: float, title: str, xlabel: str,
    color: str = "#6aa84f",
) -> str:  # fmt: skip
    """One horizontal bar per label, in the order given, on a fixed [lo, hi] axis."""
    row = 16
    left = 12 + 6.5 * max((len(s) for s in labels), default=4)
    w, top, bottom = int(left) + 340, 26, 36
    pw, ph = w - left - 12, row * len(labels)
    h = top + ph + bottom
    parts = [_title(w, title)]
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        bw = pw * (min(max(v, lo), hi) - lo) / (hi - lo)
        parts.append(
            f'<text x="{left - 6:.1f}" y="{y + row - 4}" text-anchor="end" {_FONT}>{escape(lab)}</text>'
            f'<rect x="{left:.1f}" y="{y + 2}" width="{bw:.1f}" height="{row - 4}" fill="{color}">'
            f"<title>{escape(lab)}: {_num(v)}</title></rect>"
        )
    parts.append(_x_axis(left, top, pw, ph, lo, hi, xlabel))
    return _svg(w, h, title, parts)


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _title(w: int, title: str) -> str:
    return f'<text x="{w / 2:.1f}" y="16" text-anchor="middle" font-family="sans-serif" font-size="13">{escape(title)}</text>'


def _x_axis(left: float, top: float, pw: float, ph: float, lo: float, hi: float, xlabel: str) -> str:
    """Both axis lines, six x ticks over [lo, hi] and the x label under them."""
    ticks = "".join(
        f'<text x="{left + pw * k / 5:.1f}" y="{top + ph + 14:.1f}" text-anchor="middle" {_FONT}>'
        f"{_num(lo + (hi - lo) * k / 5)}</text>"
        for k in range(6)
    )
    return (
        f'<path d="M{left:.1f},{top}V{top + ph:.1f}H{left + pw:.1f}" fill="none" stroke="#444" stroke-width="1"/>'
        f'{ticks}<text x="{left + pw / 2:.1f}" y="{top + ph + 30:.1f}" text-anchor="middle" {_FONT}>'
        f"{escape(xlabel)}</text>"
    )


def _svg(w: int, h: int, title: str, parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h:.0f}" viewBox="0 0 {w} {h:.0f}" '
        f'role="img" aria-label="{escape(title)}">{"".join(parts)}</svg>'
    )
