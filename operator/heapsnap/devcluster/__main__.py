"""``python -m heapsnap.devcluster up [--real-node]|down|env``: the ``dev/cluster`` script."""

from heapsnap.devcluster.command import main

raise SystemExit(main())
