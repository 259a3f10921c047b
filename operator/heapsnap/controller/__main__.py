"""``heapsnap-operator``: the operator process (also ``python -m heapsnap.controller``).

Settings come from the environment (see ``settings.py``); Kubernetes access from
``$KUBECONFIG`` or the in-cluster service account.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from heapsnap._malloc import tune_malloc
from heapsnap.controller.runner import run
from heapsnap.controller.settings import from_env
from heapsnap.errors import HeapsnapError


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    tune_malloc()
    try:
        settings = from_env()
    except HeapsnapError as error:
        print(f"heapsnap-operator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return asyncio.run(run(settings))
    except HeapsnapError as error:
        print(f"heapsnap-operator: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
