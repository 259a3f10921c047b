"""Builds heapsnap's one C extension; everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "heapsnap.analysis._cints",
            ["operator/heapsnap/analysis/_cints.c"],
            # Without a C compiler heapsnap still installs, and parses with numpy, ~4x slower.
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
