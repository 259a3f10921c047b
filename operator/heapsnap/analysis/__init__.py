"""Heap snapshot parsing, summary, comparison and leak detection; stands alone.

- :mod:`.stream`: ``StreamingSummary``, the summary computed while bytes pass (capture).
- :mod:`.render`: plain-text tables, ``summary_table(SnapshotSummary) -> str`` among them.
- :mod:`.reader`: ``read_snapshot(path | s3:// URI | bytes iterator, edges=True) -> HeapSnapshot``.
- :mod:`.graph`: DevTools' dominators, retained sizes and distances (compiled with numba).
- :mod:`.views`: ``analyze``, ``compare``, ``find_leaks``, ``retainers``.
- :mod:`.report`, :mod:`.html`: the self-contained HTML reports.

:mod:`.tokenizer` is the one JSON tokenizer behind both readers; importing
:mod:`.stream` or :mod:`.render` does not load numba.
"""
