"""This machine as a ``ProcessHost``: commands are subprocesses, ports are already here."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Sequence

from heapsnap.errors import TransportError
from heapsnap.transports.base import CommandResult, StdoutCallback

# A snapshot streams through the command's stdout: a pipe of 1 MiB instead of Linux's
# 64 KiB lets both sides move it in 1 MiB steps (16 times fewer wake-ups and reads).
_PIPE_SIZE = 1 << 20
_READ_SIZE = 1 << 20


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
                if process.returncode is None:
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
