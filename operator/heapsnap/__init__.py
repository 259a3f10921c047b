"""heapsnap: V8 heap snapshots of Node.js processes, on demand, locally or in Kubernetes pods."""

from heapsnap.errors import HeapsnapError

__all__ = ["HeapsnapError", "__version__"]

__version__ = "0.1.0"
