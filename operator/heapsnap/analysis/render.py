"""Plain-text tables for the terminal; the capture CLI prints :func:`summary_table` too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only for annotations: the capture path imports this module for summary_table and
    # must not load the compiled analyses (numba) with them.
    from heapsnap.analysis.graph import PathStep
    from heapsnap.analysis.heuristics import Inspection
    from heapsnap.analysis.stream import SnapshotSummary
    from heapsnap.analysis.views import ClassSummary, Comparison, LeakReport, Retainer

__all__ = [
    "class_table",
    "comparison_table",
    "human_size",
    "inspection_table",
    "leaks_table",
    "path_text",
    "retainers_table",
    "summary_table",
    "table",
]


def human_size(size: float) -> str:
    value = float(size)
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{sign}{value:.1f} GiB"  # pragma: no cover - the loop returns


def _signed(value: int) -> str:
    return f"+{value:,}" if value > 0 else f"{value:,}"


def _signed_size(value: int) -> str:
    return f"+{human_size(value)}" if value > 0 else human_size(value)


def _clip(text: str, width: int = 60) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """Columns padded to their widest cell; numbers (``right``) aligned right."""
    align = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if align[i] else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def summary_table(summary: SnapshotSummary) -> str:
    """The streaming summary: totals, then the top constructors by self size and by count."""
    head = (
        f"{summary.node_count:,} nodes, {summary.edge_count:,} edges, "
        f"{human_size(summary.total_self_size)} self size ({len(summary.node_fields)} node fields)"
    )
    parts = [head]
    for title, stats in (
        ("Top constructors by self size", summary.top_by_size),
        ("Top constructors by count", summary.top_by_count),
    ):
        rows = [
            [
                _clip(s.name),
                f"{s.count:,}",
                human_size(s.self_size),
                f"{100 * s.self_size / summary.total_self_size:.1f}%" if summary.total_self_size else "-",
            ]
            for s in stats
        ]
        parts += ["", title, table(["Constructor", "Count", "Self size", "Share"], rows)]
    return "\n".join(parts)


def class_table(rows: Sequence[ClassSummary], total: int) -> str:
    """DevTools' Summary view: per class, count, shallow and retained size."""
    cells = [
        [
            _clip(r.name),
            str(r.distance) if r.distance >= 0 else "-",
            f"{r.count:,}",
            human_size(r.shallow_size),
            human_size(r.retained_size),
            f"{100 * r.retained_size / total:.1f}%" if total else "-",
        ]
        for r in rows
    ]
    return table(["Constructor", "Distance", "Count", "Shallow size", "Retained size", "Retained"], cells)


def comparison_table(comparison: Comparison) -> str:
    cells = [
        [
            _clip(c.name),
            f"{c.new_count:,}",
            f"{c.deleted_count:,}",
            _signed(c.count_delta),
            human_size(c.new_size),
            human_size(c.deleted_size),
            _signed_size(c.size_delta),
        ]
        for c in comparison.classes
    ]
    header = (
        f"Compared by {'object id' if comparison.method == 'ids' else 'class counts'}: {comparison.reason}"
    )
    body = table(
        ["Constructor", "# New", "# Deleted", "# Delta", "Alloc. size", "Freed size", "Size delta"], cells
    )
    return f"{header}\n\n{body}"


def path_text(path: Sequence[PathStep]) -> str:
    """A retainer path on one line per hop, root first."""
    lines = []
    for depth, step in enumerate(path):
        edge = f"{step.edge} " if step.edge else ""
        lines.append(f"{'  ' * depth}{edge}{_clip(step.class_name, 50)} @{step.node_id}")
    return "\n".join(lines)


def leaks_table(report: LeakReport, paths: int = 3) -> str:
    head = (
        f"{report.target_new:,} objects were allocated between baseline and target; "
        f"{report.leaked:,} of them are still reachable in final."
    )
    if not report.suspects:
        return head + "\nNo leak suspects."
    cells = [
        [
            _clip(s.name),
            f"{s.count:,}",
            human_size(s.shallow_size),
            human_size(s.retained_size),
            f"@{s.representative_id}",
        ]
        for s in report.suspects
    ]
    parts = [head, "", table(["Constructor", "Leaked", "Shallow size", "Retained size", "Example"], cells)]
    for suspect in report.suspects[:paths]:
        parts += [
            "",
            f"Retainer path of {suspect.name} @{suspect.representative_id}:",
            path_text(suspect.path),
        ]
    return "\n".join(parts)


def retainers_table(rows: Sequence[Retainer]) -> str:
    cells = [
        [
            r.edge,
            _clip(r.class_name, 40),
            f"@{r.node_id}",
            str(r.distance) if r.distance >= 0 else "-",
            human_size(r.retained_size),
        ]
        for r in rows
    ]
    return table(
        ["Edge", "Held by", "Id", "Distance", "Retained size"], cells, [False, False, False, True, True]
    )


def inspection_table(inspection: Inspection) -> str:
    """``heapsnap inspect``: one table per heuristic."""
    parts: list[str] = []
    rows = [
        [
            _clip(repr(s.value), 50),
            f"{s.count:,}",
            human_size(s.size),
            human_size(s.wasted),
            f"@{s.example_id}",
        ]
        for s in inspection.strings
    ]
    parts += [
        f"Duplicated strings (by wasted size: (count - 1) x size; {human_size(inspection.strings_wasted)} "
        "wasted by all of them)"
    ]
    parts += [table(["String", "Count", "Size each", "Wasted", "Example"], rows) if rows else "None."]
    parts += ["", "Growing collections (element count grew in every snapshot)"]
    if inspection.growing is None:
        parts += ["Give 2 or more snapshots of one process (a series) to see them."]
    elif not inspection.growing:
        parts += ["None."]
    else:
        rows = [
            [
                g.kind,
                f"@{g.node_id}",
                " → ".join(f"{c:,}" for c in g.counts),
                human_size(g.retained_size),
                _clip(g.held_by, 60),
            ]
            for g in inspection.growing
        ]
        parts += [
            table(
                ["Kind", "Id", "Elements", "Retained size", "Held by"],
                rows,
                [False, False, True, True, False],
            )
        ]
    rows = [
        [_clip(f.class_name, 40), f"@{f.node_id}", f"{f.references:,}", human_size(f.retained_size)]
        for f in inspection.fan_out
    ]
    parts += ["", "Top fan-out (outgoing references)"]
    parts += [table(["Object", "Id", "References", "Retained size"], rows, [False, False, True, True])]
    report = inspection.globals
    parts += [
        "",
        f"Globals added by the program (baseline: {report.baseline}, snapshot {report.node_version or '?'})",
    ]
    rows = [
        [_clip(g.name, 40), _clip(g.class_name, 30), f"@{g.node_id}", human_size(g.retained_size)]
        for g in report.globals
    ]
    parts += [
        table(["Global", "Value", "Id", "Retained size"], rows, [False, False, False, True])
        if rows
        else "None."
    ]
    return "\n".join(parts)
