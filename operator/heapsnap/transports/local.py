"""This machine as a ``ProcessHost``: commands are subprocesses, ports are already here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from heapsnap.errors import TransportError
from heapsnap.transports.base import CommandResult, StdoutCallback

_READ_SIZE = 1 << 20


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
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as error:
            return CommandResult(exit_code=127, stderr=str(error).encode())
        assert process.stdout is not None and process.stderr is not None
        collected = bytearray()
        stderr_task = asyncio.create_task(process.stderr.read())
        try:
            async with asyncio.timeout(timeout):
                while chunk := await process.stdout.read(_READ_SIZE):
                    if stdout is None:
                        collected += chunk
                    else:
                        await stdout(chunk)
                exit_code = await process.wait()
                stderr = await stderr_task
        except TimeoutError as error:
            raise TransportError(f"{argv[0]} did not finish within {timeout:g} s on this machine.") from error
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                # Read to the end so the pipe's transport closes now, not at garbage collection;
                # a pipe some other process still holds open is closed on our side regardless
                # (asyncio's Process has no public close): a long-running operator must not
                # leak descriptors.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        while await process.stdout.read(_READ_SIZE):
                            pass
                transport = getattr(process, "_transport", None)
                if transport is not None:
                    transport.close()
            if not stderr_task.done():
                stderr_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stderr_task
        return CommandResult(exit_code=exit_code, stdout=bytes(collected), stderr=stderr)

    @contextlib.asynccontextmanager
    async def connect_port(self, port: int) -> AsyncIterator[tuple[str, int]]:
        yield ("127.0.0.1", port)
