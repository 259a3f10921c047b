"""Heap snapshot parsing, summary, comparison and leak detection; stands alone."""
