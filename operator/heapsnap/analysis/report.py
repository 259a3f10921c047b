"""The HTML reports of the analysis commands, built from :mod:`heapsnap.analysis.html` parts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from heapsnap import __version__
from heapsnap.analysis import html as h
from heapsnap.analysis.graph import PathStep
from heapsnap.analysis.heuristics import Inspection
from heapsnap.analysis.reader import HeapSnapshot
from heapsnap.analysis.render import human_size
from heapsnap.analysis.views import (
    Analysis,
    ClassSummary,
    Comparison,
    LeakReport,
    Retainer,
    _class_names,
    _shown,
)

__all__ = ["diff_page", "inspect_page", "leaks_page", "retainers_page", "summary_page"]

_BY = f"heapsnap {__version__}"


def _class_rows(rows: Sequence[ClassSummary], total: int) -> str:
    cells = [
        [
            (r.name, r.name),
            (str(r.distance) if r.distance >= 0 else "-", r.distance),
            h.count_cell(r.count),
            h.size_cell(r.shallow_size),
            h.size_cell(r.retained_size),
            (f"{100 * r.retained_size / total:.1f}%" if total else "-", r.retained_size),
        ]
        for r in rows
    ]
    return h.data_table(
        ["Constructor", "Distance", "Count", "Shallow size", "Retained size", "Retained"],
        cells,
        [False, True, True, True, True, True],
    )


def summary_page(source: str, analysis: Analysis, rows: Sequence[ClassSummary], top: int) -> str:
    snapshot = analysis.snapshot
    total = analysis.total_size
    user = [
        r for r in rows if not r.name.startswith(("(", "system /")) and r.name not in ("global", "Object")
    ]
    bars = [
        h.Bar(r.name, r.retained_size, f"{human_size(r.retained_size)} · {r.count:,} objects")
        for r in rows[:15]
    ]
    sections = [
        h.cards(
            [
                ("Reachable size", human_size(total)),
                ("Objects", f"{snapshot.node_count:,}"),
                ("References", f"{snapshot.edge_count:,}"),
                ("Largest program class", user[0].name if user else "-"),
            ]
        ),
        h.section(
            "Top constructors by retained size",
            "Retained size: what would be freed if every object of the class were gone "
            "(instances held by another instance of the same class are counted once).",
            h.bar_chart(bars),
            "retained",
        ),
        h.section(
            "Summary",
            f"The {min(top, len(rows))} largest classes by retained size.",
            _class_rows(rows[:top], total),
        ),
    ]
    return h.page(
        f"Heap summary: {source}", f"{_BY} · node fields: {', '.join(snapshot.layout.node_fields)}", sections
    )


def diff_page(base: str, current: str, comparison: Comparison, top: int) -> str:
    classes = comparison.classes
    grown = sum(c.size_delta for c in classes)
    bars = [
        h.Bar(
            c.name,
            c.size_delta,
            f"{'+' if c.size_delta > 0 else ''}{human_size(c.size_delta)} · {c.count_delta:+,} objects",
        )
        for c in classes[:15]
    ]
    cells = [
        [
            (c.name, c.name),
            h.count_cell(c.new_count),
            h.count_cell(c.deleted_count),
            h.count_cell(c.count_delta, signed=True),
            h.size_cell(c.new_size),
            h.size_cell(c.deleted_size),
            h.signed_size_cell(c.size_delta),
        ]
        for c in classes[:top]
    ]
    method = "object id" if comparison.method == "ids" else "class counts"
    sections = [
        h.cards(
            [
                ("Size delta", f"{'+' if grown > 0 else ''}{human_size(grown)}"),
                ("New objects", f"{sum(c.new_count for c in classes):,}"),
                ("Deleted objects", f"{sum(c.deleted_count for c in classes):,}"),
                ("Matched by", method),
            ],
            alert=("Size delta",) if grown > 0 else (),
        ),
        h.section(
            "Growth between the snapshots",
            "Self size allocated minus freed, per constructor.",
            h.diverging_chart(bars),
            "growth",
        ),
        h.section(
            "Comparison",
            comparison.reason,
            h.data_table(
                ["Constructor", "# New", "# Deleted", "# Delta", "Alloc. size", "Freed size", "Size delta"],
                cells,
                [False, True, True, True, True, True, True],
            ),
        ),
    ]
    return h.page(f"Heap comparison: {current} vs {base}", _BY, sections)


def _counts_by_class(snapshot: HeapSnapshot, names: Sequence[str]) -> list[int]:
    shown = np.flatnonzero(_shown(snapshot))
    labels = _class_names(snapshot, shown)
    return [int(np.count_nonzero(labels == name)) for name in names]


def leaks_page(
    sources: tuple[str, str, str],
    snapshots: tuple[HeapSnapshot, HeapSnapshot, Analysis],
    report: LeakReport,
    top: int,
) -> str:
    suspects = report.suspects[:top]
    names = [s.name for s in suspects[:6]]
    per_snapshot = [
        _counts_by_class(snapshots[0], names),
        _counts_by_class(snapshots[1], names),
        _counts_by_class(snapshots[2].snapshot, names),
    ]
    groups = [(name, [per_snapshot[k][i] for k in range(3)]) for i, name in enumerate(names)]
    cells = [
        [
            (s.name, s.name),
            h.count_cell(s.count),
            h.size_cell(s.shallow_size),
            h.size_cell(s.retained_size),
            (f"@{s.representative_id}", s.representative_id),
        ]
        for s in suspects
    ]
    sections = [
        h.cards(
            [
                ("Leak suspects", f"{len(report.suspects):,} classes"),
                ("Leaked objects", f"{report.leaked:,}"),
                ("Retained by them", human_size(sum(s.retained_size for s in report.suspects))),
                ("Top suspect", suspects[0].name if suspects else "-"),
            ],
            alert=("Leak suspects",) if report.suspects else (),
        ),
        h.section(
            "Growth between snapshots",
            "Objects of the suspect classes in each snapshot: a leak grows from baseline to target "
            "and stays in final.",
            h.small_multiples(["baseline", "target", "final"], groups),
            "growth",
        ),
    ]
    for suspect in suspects[:3]:
        sections.append(
            h.section(
                f"Retainer path of {suspect.name} @{suspect.representative_id}",
                "The shortest path from the GC roots (weak references skipped) to one of the "
                f"{suspect.count:,} "
                "leaked objects: breaking any link frees it.",
                h.path_diagram(suspect.path),
            )
        )
    sections.append(
        h.section(
            "Leak suspects",
            "Objects allocated between baseline and target and still alive in final, by constructor; "
            "objects owned "
            "by another leaked object are counted in its retained size.",
            h.data_table(
                ["Constructor", "Leaked", "Shallow size", "Retained size", "Example"],
                cells,
                [False, True, True, True, True],
            ),
        )
    )
    return h.page(
        "Heap leak suspects",
        f"{_BY} · baseline {sources[0]} · target {sources[1]} · final {sources[2]}",
        sections,
    )


def retainers_page(
    source: str, analysis: Analysis, node: int, rows: Sequence[Retainer], path: Sequence[PathStep]
) -> str:
    snapshot = analysis.snapshot
    name = snapshot.class_of(node)
    cells = [
        [
            (r.edge, r.edge),
            (r.class_name, r.class_name),
            (f"@{r.node_id}", r.node_id),
            (str(r.distance) if r.distance >= 0 else "-", r.distance),
            h.size_cell(r.retained_size),
        ]
        for r in rows
    ]
    sections = [
        h.cards(
            [
                ("Object", f"{name} @{int(snapshot.node_id[node])}"),
                ("Retained size", human_size(int(analysis.dominators.retained[node]))),
                ("Shallow size", human_size(int(snapshot.self_size[node]))),
                ("Retainers", f"{len(rows):,}"),
            ]
        ),
        h.section(
            "Retainer path",
            "The shortest path from the GC roots, weak references skipped.",
            h.path_diagram(path),
        ),
        h.section(
            "Retainers",
            "Objects holding a reference to it, closest to the roots first.",
            h.data_table(
                ["Edge", "Held by", "Id", "Distance", "Retained size"],
                cells,
                [False, False, True, True, True],
            ),
        ),
    ]
    return h.page(f"Retainers of {name} @{int(snapshot.node_id[node])}", f"{_BY} · {source}", sections)


def inspect_page(inspection: Inspection) -> str:
    """``heapsnap inspect --html``: a section per heuristic."""
    strings = inspection.strings
    sections = [
        h.cards(
            [
                ("Wasted by duplicated strings", human_size(inspection.strings_wasted)),
                (
                    "Growing collections",
                    "-" if inspection.growing is None else f"{len(inspection.growing):,}",
                ),
                ("Largest fan-out", f"{inspection.fan_out[0].references:,}" if inspection.fan_out else "-"),
                ("Globals added", f"{len(inspection.globals.globals):,}"),
            ],
            alert=("Growing collections",) if inspection.growing else (),
        ),
        h.section(
            "Duplicated strings",
            "Flat strings with the same value and size held more than once, by wasted size: "
            "(count - 1) x size. Concatenated strings are counted by their parts.",
            h.data_table(
                ["String", "Count", "Size each", "Wasted", "Example"],
                [
                    [
                        (s.value[:120], s.value[:120]),
                        h.count_cell(s.count),
                        h.size_cell(s.size),
                        h.size_cell(s.wasted),
                        (f"@{s.example_id}", s.example_id),
                    ]
                    for s in strings
                ],
                [False, True, True, True, True],
            ),
            "strings",
        ),
    ]
    if inspection.growing is None:
        growing = "<p class='note'>One snapshot: give a series of one process to see growth.</p>"
    else:
        growing = h.data_table(
            ["Kind", "Id", "Elements per snapshot", "Growth", "Retained size", "Held by"],
            [
                [
                    (g.kind, g.kind),
                    (f"@{g.node_id}", g.node_id),
                    (" → ".join(f"{c:,}" for c in g.counts), g.counts[-1]),
                    h.count_cell(g.growth, signed=True),
                    h.size_cell(g.retained_size),
                    (g.held_by, g.held_by),
                ]
                for g in inspection.growing
            ],
            [False, True, True, True, True, False],
        )
    sections.append(
        h.section(
            "Growing collections",
            "Maps, Sets, Arrays and plain Objects present in every snapshot (matched by id) whose "
            "element count grew from each snapshot to the next, with the path that holds them.",
            growing,
            "growing",
        )
    )
    for g in (inspection.growing or [])[:3]:
        sections.append(
            h.section(
                f"Retainer path of {g.kind} @{g.node_id}",
                "The shortest path from the GC roots (weak references skipped).",
                h.path_diagram(g.path),
            )
        )
    sections.append(
        h.section(
            "Top fan-out",
            "Objects with the most outgoing references: properties and elements, a Map's or "
            "Set's keys and values.",
            h.data_table(
                ["Object", "Id", "References", "Retained size"],
                [
                    [
                        (f.class_name, f.class_name),
                        (f"@{f.node_id}", f.node_id),
                        h.count_cell(f.references),
                        h.size_cell(f.retained_size),
                    ]
                    for f in inspection.fan_out
                ],
                [False, True, True, True],
            ),
            "fanout",
        )
    )
    report = inspection.globals
    sections.append(
        h.section(
            "Globals added by the program",
            f"Properties of the global object that a fresh Node.js does not have (baseline: "
            f"{report.baseline}; snapshot {report.node_version or 'of unknown version'}).",
            h.data_table(
                ["Global", "Value", "Id", "Retained size"],
                [
                    [
                        (g.name, g.name),
                        (g.class_name, g.class_name),
                        (f"@{g.node_id}", g.node_id),
                        h.size_cell(g.retained_size),
                    ]
                    for g in report.globals
                ],
                [False, False, True, True],
            ),
            "globals",
        )
    )
    return h.page("Heap inspection", f"{_BY} · {' · '.join(inspection.sources)}", sections)
