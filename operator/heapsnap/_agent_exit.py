"""The exit codes of heapsnap's target-side agent (``engine/agent.js``), for every side.

``agent.js`` declares the same table as its ``EXIT`` constant (a test checks that the
two agree); a host that follows a file itself (``transports.local``) answers with them too.
"""

from __future__ import annotations

from enum import IntEnum


class AgentExit(IntEnum):
    OK = 0
    FAILED = 1  # an unexpected error: its stack is on stderr
    USAGE = 2  # an unknown subcommand
    GONE = 3  # the target process exited (or was gone already)
    TIMEOUT = 4  # no snapshot file appeared, or it was still being written, at the deadline
    STOPPED = 5  # SIGTERM: the capture was stopped
