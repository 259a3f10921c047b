"""Ways to reach the machine or container where a target Node.js process runs.

A transport knows nothing of heap snapshots: it runs a command next to the target and
makes one of the target's loopback TCP ports reachable from here. The capture engine
(``heapsnap.engine``) drives everything else through these two operations, so the same
engine works against a local process and against a pod.
"""

from heapsnap.transports.base import CommandResult, ProcessHost, StdoutCallback

__all__ = ["CommandResult", "ProcessHost", "StdoutCallback"]
