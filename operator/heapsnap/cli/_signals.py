"""Running a command's coroutine so that a stop signal ends it the way Ctrl-C does.

Python's default for SIGTERM and SIGHUP ends the process at once: a capture killed by
``timeout``, ``kill``, systemd or a closed terminal left its multipart upload open and
the target's inspector listening (measured: both left behind). Here, SIGINT, SIGTERM and
SIGHUP cancel the command, so its clean-up runs. A second one cancels that clean-up's
waits too (for the target to finish a snapshot, say); a third takes its default course.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The command was cancelled by a stop signal; its clean-up has run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def raise_on_stop_signals() -> None:
    """In synchronous code, SIGTERM and SIGHUP raise ``Stopped`` (as SIGINT raises
    KeyboardInterrupt), so ``finally`` clean-ups run: a download's partial file, say."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, stop)


def run(main: Coroutine[Any, Any, T], *, program: str = "heapsnap") -> T:
    """``asyncio.run(main)``; raises ``Stopped`` once a stop signal has cancelled it."""
    return asyncio.run(_until_stopped(main, program))


async def _until_stopped(main: Coroutine[Any, Any, T], program: str) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []
    installed: list[int] = []

    def restore() -> None:
        while installed:
            loop.remove_signal_handler(installed.pop())

    def stop(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            message = "stopping; cleaning up first (the target may have to finish a snapshot it started)"
        else:
            restore()
            message = (
                "stopping now, without waiting for the target (an inspector or a snapshot file may be left)"
            )
        print(f"{program}: {name}: {message}", file=sys.stderr, flush=True)
        task.cancel()

    for signum in STOP_SIGNALS:
        # Not possible outside the main thread (tests calling main() on a thread): then
        # the defaults stay, as with asyncio.run.
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
    try:
        return await main
    except asyncio.CancelledError:
        if received:
            raise Stopped(received[0]) from None
        raise
    finally:
        restore()
