"""This machine as a ``ProcessHost``: commands are subprocesses, ports are already here."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator, Sequence

from heapsnap._agent_exit import AgentExit
from heapsnap.errors import TransportError
from heapsnap.transports.base import CommandResult, StdoutCallback

# A snapshot streams through the command's stdout: a pipe of 1 MiB instead of Linux's
# 64 KiB lets both sides move it in 1 MiB steps (16 times fewer wake-ups and reads).
_PIPE_SIZE = 1 << 20
_READ_SIZE = 1 << 20
#: How often a file being written is looked at again once its end is reached (the agent's pace).
_FOLLOW_POLL = 0.02


def _pipe(size: int | None = None) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    if size is not None:
        with contextlib.suppress(OSError, AttributeError):  # a hint: not every kernel allows it
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, size)
    os.set_blocking(read_end, False)
    return read_end, write_end


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _drain(fd: int, take: StdoutCallback) -> None:
    """Pass on what arrives on ``fd`` until end of file, as it arrives."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _set_once, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return
        await take(chunk)


async def _stop(process: asyncio.subprocess.Process, out_read: int) -> None:
    """End a cancelled command that has no time limit (the agent's ``tail`` and
    ``signal-follow``, which end by their own deadline): SIGTERM first, so the agent
    finishes what must not be left half done (the snapshot file it waits for is unlinked,
    see agent.js ``follow``), with its output read and dropped meanwhile so that it cannot
    block on a full pipe. Cancelled again (a second Ctrl-C), it is killed."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()

    async def discard(chunk: bytes) -> None:
        return None

    draining = asyncio.ensure_future(_drain(out_read, discard))
    try:
        await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining


class LocalHost:
    """Runs commands on this machine; ``connect_port`` yields ``("127.0.0.1", port)``."""

    @property
    def description(self) -> str:
        return "this machine"

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdout: StdoutCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the ProcessHost protocol)
    ) -> CommandResult:
        collected, errors = bytearray(), bytearray()

        async def collect(chunk: bytes) -> None:
            collected.extend(chunk)

        async def collect_errors(chunk: bytes) -> None:
            errors.extend(chunk)

        out_read, out_write = _pipe(_PIPE_SIZE)
        err_read, err_write = _pipe()
        try:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out_write, stderr=err_write
                )
            except (FileNotFoundError, PermissionError, NotADirectoryError) as error:
                return CommandResult(exit_code=127, stderr=str(error).encode())
            finally:
                os.close(out_write)
                os.close(err_write)
            stderr_task = asyncio.create_task(_drain(err_read, collect_errors))
            try:
                async with asyncio.timeout(timeout):
                    await _drain(out_read, stdout or collect)
                    exit_code = await process.wait()
                    await stderr_task
            except TimeoutError as error:
                raise TransportError(
                    f"{argv[0]} did not finish within {timeout:g} s on this machine."
                ) from error
            finally:
                if process.returncode is None and timeout is None:
                    await _stop(process, out_read)
                elif process.returncode is None:
                    # Any binary may be asked --version (/proc/PID/exe may not be node), and
                    # one may ignore SIGTERM: a command with a time limit is killed.
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
                if not stderr_task.done():
                    stderr_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await stderr_task
        finally:
            os.close(out_read)
            os.close(err_read)
        return CommandResult(exit_code=exit_code, stdout=bytes(collected), stderr=bytes(errors))

    @contextlib.asynccontextmanager
    async def connect_port(self, port: int) -> AsyncIterator[tuple[str, int]]:
        yield ("127.0.0.1", port)

    async def follow_file(self, pid: int, path: str, limit: float, stdout: StdoutCallback) -> CommandResult:
        """The agent's ``tail PID PATH LIMIT`` (seconds), done in this process.

        Waits for ``pid`` to create ``path``, opens and unlinks it at once, and passes on
        its bytes as they are written until ``pid`` has closed it. Same exit codes as the
        agent (``AgentExit``): OK, FAILED (the file could not be read), GONE, TIMEOUT;
        what ``stdout`` raises comes through as it is. On this machine heapsnap can read
        the file itself: V8 then shares the CPUs with no Node.js process and no pipe (it
        wrote a 410 MiB snapshot 0.35 s faster).
        """
        deadline = time.monotonic() + limit
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                break
            except FileNotFoundError:
                if not _alive(pid):
                    return _gone(pid, "before writing its snapshot")
                if time.monotonic() > deadline:
                    return CommandResult(AgentExit.TIMEOUT, stderr=b"timeout: no snapshot file appeared")
                await asyncio.sleep(_FOLLOW_POLL)
            except OSError as error:
                return _unreadable(path, error)
        try:
            try:
                os.unlink(path)
                stat = os.fstat(fd)
            except OSError as error:
                return _unreadable(path, error)
            started, closed, written = time.monotonic(), False, 0.0
            while True:
                try:
                    chunk = os.read(fd, _READ_SIZE)
                except OSError as error:
                    return _unreadable(path, error)
                if chunk:
                    await stdout(chunk)
                    continue
                if closed:
                    break
                if not _alive(pid):
                    return _gone(pid, "while writing its snapshot")
                if time.monotonic() > deadline:
                    return CommandResult(
                        AgentExit.TIMEOUT, stderr=b"timeout: the snapshot is still being written"
                    )
                closed = not _holds(pid, stat)
                if closed and not _alive(pid):  # closed by an exit (killed mid-write): not written
                    return _gone(pid, "while writing its snapshot")
                if closed:
                    written = time.monotonic() - started
                else:
                    await asyncio.sleep(_FOLLOW_POLL)
        finally:
            os.close(fd)
        return CommandResult(
            AgentExit.OK, stderr=json.dumps({"written_seconds": round(written, 3)}).encode() + b"\n"
        )


def _unreadable(path: str, error: OSError) -> CommandResult:
    return CommandResult(AgentExit.FAILED, stderr=f"{path}: {error.strerror or error}".encode())


def _gone(pid: int, when: str) -> CommandResult:
    return CommandResult(AgentExit.GONE, stderr=f"process {pid} exited {when}".encode())


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (the agent's ``alive``).

    A zombie has exited, though it keeps its /proc entry until reaped; an exiting process
    (PF_EXITING, 0x4 in the flags) closes its files before it is a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        state, flags = fields[0], int(fields[6])
    except (OSError, IndexError, ValueError):
        return False
    return state not in (b"Z", b"X") and not flags & 4


def _holds(pid: int, file: os.stat_result) -> bool:
    """Whether ``pid`` still has ``file`` open (by inode: it is unlinked)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            held = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if (held.st_ino, held.st_dev) == (file.st_ino, file.st_dev):
            return True
    return False
