"""One self-contained HTML page per report: inline CSS and SVG charts, no network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from heapsnap.analysis.graph import PathStep
from heapsnap.analysis.render import human_size

__all__ = [
    "Bar",
    "bar_chart",
    "cards",
    "data_table",
    "diverging_chart",
    "page",
    "path_diagram",
]

_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1")

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --accent:#4e79a7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 "DejaVu Sans", system-ui, sans-serif; color: var(--ink);
       background: var(--bg); }
header { background: #102a43; color: #fff; padding: 22px 32px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 4px 0 0; color: #bcccdc; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 32px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 22px;
          margin: 18px 0; }
section h2 { margin: 0 0 4px; font-size: 17px; }
section p.note { margin: 0 0 12px; color: var(--muted); font-size: 13px; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; }
.card { flex: 1 1 160px; background: #fff; border: 1px solid var(--line); border-radius: 8px;
        padding: 12px 16px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; margin-top: 2px; }
.card.alert .value { color: #c53030; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #f0f4f8; font-weight: 600; cursor: pointer; user-select: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { max-width: 420px; overflow: hidden; text-overflow: ellipsis; }
tr:hover td { background: #f8fafc; }
.pos { color: #c53030; } .neg { color: #2f855a; }
svg text { font-family: "DejaVu Sans", system-ui, sans-serif; }
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var descending = th.dataset.sort !== 'desc';
      th.dataset.sort = descending ? 'desc' : 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.v || a.cells[column].textContent;
        var y = b.cells[column].dataset.v || b.cells[column].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return descending ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    note: str = ""


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"<main>{body}</main><script>{_JS}</script></body></html>\n"
    )


def section(title: str, note: str, content: str, ident: str = "") -> str:
    anchor = f" id='{escape(ident)}'" if ident else ""
    return f"<section{anchor}><h2>{escape(title)}</h2><p class='note'>{escape(note)}</p>{content}</section>"


def cards(items: Sequence[tuple[str, str]], alert: Sequence[str] = ()) -> str:
    cells = "".join(
        f"<div class='card{' alert' if label in alert else ''}'><div class='label'>{escape(label)}</div>"
        f"<div class='value'>{escape(value)}</div></div>"
        for label, value in items
    )
    return f"<div class='cards'>{cells}</div>"


def bar_chart(bars: Sequence[Bar], *, color: str = _PALETTE[0], label_width: int = 260) -> str:
    """Horizontal bars, largest first, with the value written after each bar."""
    if not bars:
        return "<p class='note'>Nothing to show.</p>"
    width, row, top = 1100, 26, 8
    plot = width - label_width - 130
    biggest = max(abs(b.value) for b in bars) or 1
    parts = []
    for i, bar in enumerate(bars):
        y = top + i * row
        length = max(2.0, plot * abs(bar.value) / biggest)
        parts.append(
            f"<text x='{label_width - 8}' y='{y + 16}' text-anchor='end' font-size='12' fill='#1f2933'>"
            f"{escape(_clip(bar.label, 38))}</text>"
            f"<rect x='{label_width}' y='{y + 4}' width='{length:.1f}' height='{row - 8}' rx='3' "
            f"fill='{color}'>"
            f"<title>{escape(bar.label)}: {escape(bar.note)}</title></rect>"
            f"<text x='{label_width + length + 6:.1f}' y='{y + 16}' font-size='12' fill='#616e7c'>"
            f"{escape(bar.note)}</text>"
        )
    height = top * 2 + row * len(bars)
    return f"<svg viewBox='0 0 {width} {height}' width='100%' role='img' class='chart'>{''.join(parts)}</svg>"


def diverging_chart(bars: Sequence[Bar], *, label_width: int = 260) -> str:
    """Bars right of a zero line for growth (red), left of it for what was freed (green)."""
    bars = [bar for bar in bars if bar.value]
    if not bars:
        return "<p class='note'>Nothing changed.</p>"
    width, row, top, note_room = 1100, 26, 8, 170
    grown = max((b.value for b in bars if b.value > 0), default=0.0)
    freed = max((-b.value for b in bars if b.value < 0), default=0.0)
    span = width - label_width - 20 - note_room * ((grown > 0) + (freed > 0))
    scale = span / (grown + freed)
    zero = label_width + 10 + (note_room + freed * scale if freed else 0)
    height = top * 2 + row * len(bars)
    parts = [f"<line x1='{zero:.1f}' x2='{zero:.1f}' y1='0' y2='{height}' stroke='#9aa5b1'/>"]
    for i, bar in enumerate(bars):
        y = top + i * row
        length = max(2.0, abs(bar.value) * scale)
        up = bar.value > 0
        x = zero if up else zero - length
        note_x = zero + length + 6 if up else zero - length - 6
        parts.append(
            f"<text x='{label_width - 8}' y='{y + 16}' text-anchor='end' font-size='12' fill='#1f2933'>"
            f"{escape(_clip(bar.label, 38))}</text>"
            f"<rect x='{x:.1f}' y='{y + 4}' width='{length:.1f}' height='{row - 8}' rx='3' "
            f"fill='{'#e15759' if up else '#59a14f'}'>"
            f"<title>{escape(bar.label)}: {escape(bar.note)}</title></rect>"
            f"<text x='{note_x:.1f}' y='{y + 16}' font-size='12' fill='#616e7c' "
            f"text-anchor='{'start' if up else 'end'}'>{escape(bar.note)}</text>"
        )
    return f"<svg viewBox='0 0 {width} {height}' width='100%' role='img' class='chart'>{''.join(parts)}</svg>"


def small_multiples(series: Sequence[str], groups: Sequence[tuple[str, Sequence[int]]]) -> str:
    """One small bar chart per group (a class), each on its own scale, one bar per series."""
    if not groups:
        return "<p class='note'>Nothing to show.</p>"
    panel, gap, height = 170, 14, 190
    width = len(groups) * (panel + gap)
    parts = []
    for g, (label, values) in enumerate(groups):
        x0 = g * (panel + gap)
        biggest = max(values) or 1
        bar_w = (panel - 20) / len(series)
        parts.append(
            f"<rect x='{x0}' y='0' width='{panel}' height='{height}' rx='6' fill='#f8fafc' stroke='#e4e7eb'/>"
            f"<text x='{x0 + panel / 2}' y='20' text-anchor='middle' font-size='13' font-weight='600' "
            f"fill='#1f2933'>{escape(_clip(label, 22))}</text>"
        )
        for s, value in enumerate(values):
            h = 110 * value / biggest
            x = x0 + 10 + s * bar_w
            parts.append(
                f"<rect x='{x + 4:.1f}' y='{150 - h:.1f}' width='{bar_w - 8:.1f}' height='{max(h, 1):.1f}' "
                f"rx='2' fill='{_PALETTE[s % len(_PALETTE)]}'>"
                f"<title>{escape(label)} in {escape(series[s])}: {value:,}</title></rect>"
                f"<text x='{x + bar_w / 2:.1f}' y='{146 - h:.1f}' text-anchor='middle' font-size='11' "
                f"fill='#1f2933'>{value:,}</text>"
                f"<text x='{x + bar_w / 2:.1f}' y='168' text-anchor='middle' font-size='11' fill='#616e7c'>"
                f"{escape(series[s])}</text>"
            )
    return f"<svg viewBox='0 0 {width} {height}' width='100%' role='img' class='chart'>{''.join(parts)}</svg>"


def path_diagram(path: Sequence[PathStep], *, highlight_last: bool = True) -> str:
    """A retainer path as a vertical chain of boxes joined by labelled arrows, root on top."""
    if not path:
        return "<p class='note'>No path from the GC roots (only weak retainers).</p>"
    width, box_h, gap, box_w = 1100, 34, 30, 420
    x = 60
    parts: list[str] = []
    for i, step in enumerate(path):
        y = 10 + i * (box_h + gap)
        last = highlight_last and i == len(path) - 1
        fill, stroke = ("#fde8e8", "#e15759") if last else ("#eef4fb", "#4e79a7")
        name = step.class_name
        parts.append(
            f"<rect x='{x}' y='{y}' width='{box_w}' height='{box_h}' rx='6' fill='{fill}' stroke='{stroke}'/>"
            f"<text x='{x + 12}' y='{y + 22}' font-size='13' fill='#1f2933'>{escape(_clip(name, 44))}</text>"
            f"<text x='{x + box_w - 10}' y='{y + 22}' font-size='12' text-anchor='end' fill='#616e7c'>"
            f"@{step.node_id}</text>"
        )
        if i + 1 < len(path):
            y1, y2 = y + box_h, y + box_h + gap
            parts.append(
                f"<line x1='{x + 40}' x2='{x + 40}' y1='{y1}' y2='{y2 - 3}' stroke='#9aa5b1' "
                "stroke-width='2'/>"
                f"<path d='M{x + 34},{y2 - 8} L{x + 46},{y2 - 8} L{x + 40},{y2} z' fill='#9aa5b1'/>"
                f"<text x='{x + 54}' y='{y1 + gap / 2 + 5}' font-size='12' fill='#c05621' "
                f"font-family='DejaVu Sans Mono, monospace'>{escape(_clip(path[i + 1].edge, 80))}</text>"
            )
    height = 20 + len(path) * (box_h + gap) - gap
    svg = f"<svg viewBox='0 0 {width} {height}' width='100%' role='img' class='chart path'>"
    return f"{svg}{''.join(parts)}</svg>"


def data_table(
    headers: Sequence[str], rows: Sequence[Sequence[tuple[str, object]]], numeric: Sequence[bool]
) -> str:
    """A sortable table; each cell is (text, sort value)."""
    head = "".join(
        f"<th class='{'num' if numeric[i] else ''}'>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{'num' if numeric[i] else 'name'}' data-v='{escape(str(value))}'>{escape(text)}</td>"
            for i, (text, value) in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def size_cell(size: int) -> tuple[str, float]:
    return human_size(size), float(size)


def signed_size_cell(size: int) -> tuple[str, float]:
    text = human_size(size)
    return (f"+{text}" if size > 0 else text), float(size)


def count_cell(count: int, signed: bool = False) -> tuple[str, float]:
    text = f"{count:+,}" if signed else f"{count:,}"
    return text, float(count)
