from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

StdoutCallback = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class CommandResult:
    """What a command run next to the target left behind.

    ``stdout`` holds the output only when no streaming callback was given.
    """

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""


class ProcessHost(Protocol):
    """The machine or container where the target process lives."""

    @property
    def description(self) -> str:
        """Human words for messages: ``"this machine"`` or ``"pod shop/api-7d9f, container app"``."""
        ...

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdout: StdoutCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the transport must stop the remote command too)
    ) -> CommandResult:
        """Run ``argv`` in the target's namespaces; bytes on stdout are passed on unchanged.

        Raises ``TransportError`` when the channel breaks, never for a non-zero exit.
        """
        ...

    def connect_port(self, port: int) -> AbstractAsyncContextManager[tuple[str, int]]:
        """Make the target-side ``127.0.0.1:port`` reachable here as ``(host, port)``.

        Local processes yield the port itself; pods yield a loopback listener bridged to
        a port-forward stream. The address is always an IP, as Node's inspector refuses
        other Host headers.
        """
        ...


@runtime_checkable
class FollowsFiles(Protocol):
    """A host that reads the target's files itself (this machine): no agent needed to tail one."""

    async def follow_file(self, pid: int, path: str, limit: float, stdout: StdoutCallback) -> CommandResult:
        """The agent's ``tail PID PATH LIMIT``: the same bytes, effects and exit codes."""
        ...
