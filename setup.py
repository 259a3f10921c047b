"""Builds heapsnap's one C extension, and puts into the wheel the two files of the
repository root that ``heapsnap demo`` runs (everything else is declared in pyproject.toml)."""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# Each file has one source, at the repository root; a wheel carries a copy under
# heapsnap/_data/, where cli/demo.py looks when it does not run from a checkout.
SHIPPED = ("examples/leaky-app/server.js", "crds/heapsnap.dev_heapsnapshots.yaml")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        for name in SHIPPED:
            source = Path(name)
            if not source.exists():  # the operator image's build context has no demo files
                print(f"heapsnap: {name} is not in this source tree; the demo will not find it")
                continue
            target = Path(self.build_lib, "heapsnap", "_data", name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


setup(
    cmdclass={"build_py": BuildPyWithData},
    ext_modules=[
        Extension(
            "heapsnap.analysis._cints",
            ["operator/heapsnap/analysis/_cints.c"],
            # Without a C compiler heapsnap still installs, and parses with numpy, ~4x slower.
            optional=True,
            extra_compile_args=["-O2"],
        )
    ],
)
