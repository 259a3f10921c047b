"""Real Node.js processes for tests: start one on a given Node version and kill it after.

``start_node(script_or_path, version="20")`` starts ``node`` (20 from PATH, or 22/24 from
``$HEAPSNAP_CACHE/node/<version>/bin/node``), waits for a line containing ``ready`` on its
stdout, and returns a ``NodeProcess``. ``LEAKY_APP`` plants 100,000 ``LeakyThing``
instances and serves HTTP; it prints ``ready <port>``.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NODE_VERSIONS = {"20": "node", "22": "22.23.3", "24": "24.21.0", "26": "26.12.1"}

LEAKY_APP = r"""
const http = require('http');
class LeakyThing { constructor(i) { this.id = i; this.payload = 'leak-' + i; } }
globalThis.leaked = [];
for (let i = 0; i < Number(process.env.LEAKY_COUNT || 100000); i++) globalThis.leaked.push(new LeakyThing(i));
const server = http.createServer((req, res) => {
  if (req.url === '/busy') {
    const end = Date.now() + Number(process.env.BUSY_MS || 3000);
    while (Date.now() < end) {}
  }
  if (req.url === '/exit') { res.end('bye'); setTimeout(() => process.exit(0), 10); return; }
  res.end('ok ' + globalThis.leaked.length);
});
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log('ready ' + server.address().port);
});
"""

# Keeps allocating LeakyThing objects (300 every 100 ms): a leak that grows between snapshots.
GROWING_APP = r"""
class LeakyThing { constructor(i) { this.id = i; this.payload = 'leak-' + i; } }
globalThis.kept = [];
let i = 0;
setInterval(() => { for (let k = 0; k < 300; k++) globalThis.kept.push(new LeakyThing(i++)); }, 100);
console.log('ready');
"""

# The main thread keeps 1,000 LeakyThing; worker "pool-a" (threadId 1) keeps 5,000 WorkerLeak.
WORKER_APP = r"""
const http = require('http');
const { Worker } = require('worker_threads');
class LeakyThing { constructor(i) { this.id = i; } }
globalThis.leaked = Array.from({ length: 1000 }, (_, i) => new LeakyThing(i));
const worker = new Worker(`
  class WorkerLeak { constructor(i) { this.id = i; this.payload = 'w-' + i; } }
  globalThis.kept = Array.from({ length: 5000 }, (_, i) => new WorkerLeak(i));
  require('worker_threads').parentPort.postMessage('filled');
  setInterval(() => {}, 1000);
`, { eval: true, name: 'pool-a' });
worker.once('message', () => {
  const server = http.createServer((req, res) => res.end('ok ' + worker.threadId));
  server.listen(0, '127.0.0.1', () => console.log('ready ' + server.address().port));
});
"""


# Holds the random $SECRET in 5,000 objects: as flat strings, in concatenated and sliced
# strings, as a regular expression and next to escaped and non-ASCII text. With
# $WRITE_SNAPSHOT (a path) it writes its own snapshot there and exits; else it prints
# "ready" and waits.
SECRET_APP = r"""
const secret = process.env.SECRET;
class SecretHolder {
  constructor(i) {
    this.flat = JSON.parse('"' + secret + ':' + i + '"');
    this.cons = 'Bearer ' + secret + ' for user ' + i;
    this.sliced = (secret + ' and some padding for a parent string ' + i).slice(0, secret.length + 24);
    this.same = secret;
  }
}
globalThis.holders = Array.from({ length: 5000 }, (_, i) => new SecretHolder(i));
globalThis.pattern = new RegExp(secret + '[0-9]+');
globalThis.wide = 'caf\u00e9 \u2603 \ud83d\ude00\n\t"\\' + secret;
if (process.env.WRITE_SNAPSHOT) {
  require('v8').writeHeapSnapshot(process.env.WRITE_SNAPSHOT);
} else {
  setInterval(() => {}, 1000);
  console.log('ready');
}
"""


def node_binary(version: str = "20") -> str:
    """Path of the Node.js binary for a major version the tests use (20, 22, 24, 26)."""
    release = NODE_VERSIONS.get(version, version)
    if release == "node":
        return "node"
    cache = Path(os.environ.get("HEAPSNAP_CACHE", Path.home() / ".cache" / "heapsnap"))
    path = cache / "node" / release / "bin" / "node"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run bash dev/setup.d/20-node.sh")
    return str(path)


@dataclass
class NodeProcess:
    popen: subprocess.Popen[bytes]
    ready_line: str
    version: str
    lines: list[str] = field(default_factory=list)
    stderr: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def port(self) -> int | None:
        """The HTTP port from a ``ready <port>`` line."""
        match = re.search(r"ready (\d+)", self.ready_line)
        return int(match.group(1)) if match else None

    def get(self, path: str = "/", timeout: float = 30) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
            return str(response.read().decode())

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)
        if self.popen.stderr is not None and not self.popen.stderr.closed:
            self.stderr = self.popen.stderr.read().decode(errors="replace")
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()

    def stderr_text(self) -> str:
        """Everything the process wrote on stderr; stops it first."""
        self.stop()
        return self.stderr


def start_node(
    script_or_path: str | Path,
    *,
    version: str = "20",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    ready: str = "ready",
    timeout: float = 30,
    user: int | None = None,
    wrapper: Sequence[str] = (),
) -> NodeProcess:
    """Start a Node.js process running a script (source text, or a path to a .js file).

    ``wrapper`` comes first on the command line and must end by exec'ing the rest (node
    keeps the pid: ``unshare ... sh -c '... && exec "$@"' sh``).
    """
    target = str(script_or_path)
    program = [target] if target.endswith(".js") and "\n" not in target else ["-e", target]
    full_env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
    full_env.update(env or {})
    popen = subprocess.Popen(
        [*wrapper, node_binary(version), *args, *program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        user=user,
    )
    assert popen.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(popen.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    process = NodeProcess(popen, "", version)
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.2):
            if popen.poll() is not None:
                break
            continue
        chunk = os.read(popen.stdout.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            text = line.decode(errors="replace")
            process.lines.append(text)
            if ready in text:
                process.ready_line = text
                selector.close()
                return process
    selector.close()
    process.stop()
    raise RuntimeError(f"node did not print {ready!r}: {process.stderr_text()[-2000:]}")


@pytest.fixture
def node_process() -> Iterator[Callable[..., NodeProcess]]:
    """``start``: called like ``start_node``; every process it started is killed after the test."""
    started: list[NodeProcess] = []

    def start(script_or_path: str | Path, **kwargs: Any) -> NodeProcess:
        process = start_node(script_or_path, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        with contextlib.suppress(Exception):
            process.stop()


def stop_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
