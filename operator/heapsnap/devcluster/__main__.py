"""``python -m heapsnap.devcluster up|down|env``: the ``dev/cluster`` script."""

from heapsnap.devcluster.harness import main

raise SystemExit(main())
