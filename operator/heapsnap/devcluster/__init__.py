"""A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager and
kwok) run as processes on loopback: what ``heapsnap demo --cluster``, ``dev/cluster`` and
the tests start. Needs the binaries ``dev/setup.sh`` builds into the per-user cache and
the ``cryptography`` package (``pip install 'heapsnap[cluster]'``).

It stands apart from the rest of heapsnap: nothing here imports the engine, the
controller or the CLI, so the package and the test suite share it without either one
importing the other.
"""
