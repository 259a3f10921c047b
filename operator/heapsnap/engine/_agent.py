"""Runs ``agent.js`` next to the target with a Node.js binary found there."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from heapsnap._agent_exit import AgentExit
from heapsnap.errors import CaptureError, NotNodeProcess, ProcessNotFound, TargetExited
from heapsnap.transports.base import CommandResult, FollowsFiles, ProcessHost, StdoutCallback

SIGUSR1_MASK = 1 << (10 - 1)
_SIGNALS = {"SIGUSR1": 10, "SIGUSR2": 12, "SIGQUIT": 3, "SIGHUP": 1, "SIGINT": 2, "SIGTERM": 15}


@cache
def agent_script() -> str:
    return resources.files("heapsnap.engine").joinpath("agent.js").read_text()


def signal_mask(name: str) -> int:
    number = _SIGNALS.get(name.upper()) if not name.isdigit() else int(name)
    return 0 if number is None else 1 << (number - 1)


@dataclass(frozen=True)
class NodeProcessInfo:
    """What the agent saw of one process through /proc."""

    pid: int
    argv: list[str]
    exe: str | None
    is_node: bool
    cwd: str | None
    uid: int
    sigcgt: int
    rss_bytes: int
    node_options: str | None
    listening: list[int]
    memory_max: int | None
    memory_current: int | None
    mem_available: int | None
    tmpdir: str | None = None
    # In another mount namespace than the agent (a container, PrivateTmp=): the agent
    # reaches its files through /proc/PID/root. In another network namespace: its
    # loopback, and so an inspector it opens, cannot be reached from the agent's side.
    other_mounts: bool = False
    other_network: bool = False
    # Its Node.js version, when the agent runs its own binary (see select_process); None
    # when that binary cannot run here (built for musl, say) and the agent is another node.
    version: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NodeProcessInfo:
        memory = raw.get("memory") or {}
        return cls(
            pid=int(raw["pid"]),
            argv=list(raw["argv"]),
            exe=raw.get("exe"),
            is_node=bool(raw["node"]),
            cwd=raw.get("cwd"),
            uid=int(raw["uid"]),
            sigcgt=int(raw.get("sigcgt") or "0", 16),
            rss_bytes=int(raw.get("vm_rss_bytes") or 0),
            node_options=raw.get("node_options"),
            listening=[int(p) for p in raw.get("listening", [])],
            memory_max=memory.get("max"),
            memory_current=memory.get("current"),
            mem_available=raw.get("mem_available_bytes"),
            tmpdir=raw.get("tmpdir") or None,
            other_mounts=bool(raw.get("other_mounts")),
            other_network=bool(raw.get("other_network")),
        )

    def agent_path(self, path: str) -> str:
        """Where the agent finds the file the process knows as ``path`` (absolute)."""
        return f"/proc/{self.pid}/root{path}" if self.other_mounts else path

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def node_flags(self) -> list[str]:
        """Node's own options: NODE_OPTIONS, then argv up to the script or ``-e``."""
        flags = shlex.split(self.node_options) if self.node_options else []
        for arg in self.argv[1:]:
            if not arg.startswith("-") or arg in ("-e", "--eval", "-p", "--print", "-", "--"):
                break
            flags.append(arg)
        return flags

    def flag(self, name: str) -> str | None:
        """The last value of ``--name=value`` (or ``--name value``) among Node's options."""
        value: str | None = None
        flags = self.node_flags()
        for i, arg in enumerate(flags):
            if arg == name and i + 1 < len(flags) and not flags[i + 1].startswith("-"):
                value = flags[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
            elif arg == name:
                value = ""
        return value

    def handles(self, mask: int) -> bool:
        return bool(self.sigcgt & mask)

    def diagnostic_dir(self) -> str:
        """Where the process writes diagnostic files: --diagnostic-dir, else its cwd."""
        cwd = self.cwd or "/"
        return posixpath.normpath(posixpath.join(cwd, self.flag("--diagnostic-dir") or cwd))

    def scratch_dirs(self) -> list[str]:
        """Directories for a temporary snapshot, most fitting first."""
        flag = self.diagnostic_dir() if self.flag("--diagnostic-dir") else None
        candidates = [flag, self.tmpdir, "/tmp", self.cwd]
        return list(dict.fromkeys(posixpath.normpath(d) for d in candidates if d and d.startswith("/")))


@dataclass(frozen=True)
class ProbeResult:
    processes: list[NodeProcessInfo]
    # The binary that ran the probe, as Node.js itself resolves it.
    agent_exec_path: str = ""

    @classmethod
    def from_json(cls, reply: dict[str, Any]) -> ProbeResult:
        agent = reply.get("agent") or {}
        return cls(
            processes=[NodeProcessInfo.from_json(p) for p in reply["processes"]],
            agent_exec_path=str(agent.get("exec_path") or ""),
        )


@dataclass(frozen=True)
class DirCheck:
    """A directory as the target's user sees it: writable, free bytes, and whether it is tmpfs."""

    dir: str
    writable: bool
    free: int | None = None
    tmpfs: bool | None = None
    code: str | None = None


def node_major(version: str | None) -> int:
    """12 for ``v12.22.1``; 0 when unknown."""
    match = re.match(r"v(\d+)", version or "")
    return int(match.group(1)) if match else 0


class Agent:
    """The agent, run by ``node`` (a binary path next to the target)."""

    def __init__(self, host: ProcessHost, node: str, version: str) -> None:
        self.host = host
        self.node = node
        self.version = version

    @property
    def major(self) -> int:
        return node_major(self.version)

    @classmethod
    async def locate(cls, host: ProcessHost, pid: int | None = None) -> Agent:
        """Find a Node.js binary next to the target; the target's own one when the pid is known.

        ``--version`` is what any binary may safely be asked: ``/proc/PID/exe`` may not be node.
        """
        own = [f"/proc/{pid}/exe"] if pid is not None else []
        others = ["node", "/proc/1/exe", "/usr/local/bin/node", "/usr/bin/node"]
        own_failure = ""
        for candidate in [*own, *others]:
            result = await host.run([candidate, "--version"], timeout=15)
            version = result.stdout.decode(errors="replace").strip()
            if result.exit_code == 0 and re.fullmatch(r"v\d+\.\d+\.\d+\S*", version):
                return cls(host, candidate, version)
            if candidate in own:
                own_failure = _detail(result)[-200:] or f"exit {result.exit_code}"
        if pid is not None:
            # A process in a container may run a node built for another system: Alpine's,
            # linked against musl, cannot start on a glibc host (its loader is not there).
            raise ProcessNotFound(
                f"No Node.js binary runs on {host.description} to inspect pid {pid}. Its own binary "
                f"(/proc/{pid}/exe) did not start here ({own_failure}): either there is no such "
                "process or it is not Node.js, or its node is built for another system (Alpine's, "
                "with musl, say) and runs only inside its container; and this machine has no node "
                f"of its own (tried {', '.join(others)}). Check the pid, or install Node.js here, or "
                "run heapsnap inside the process's container."
            )
        raise NotNodeProcess(
            f"No Node.js binary found on {host.description} (tried {', '.join(others)}): "
            "is this a Node.js container? Name the process or container that runs node."
        )

    async def run(
        self, *args: str, stdout: StdoutCallback | None = None, limit: float | None = 30
    ) -> CommandResult:
        argv = [self.node, "-e", agent_script(), "--", *args]
        return await self.host.run(argv, stdout=stdout, timeout=limit)

    # The methods below take paths as the process names them: the agent reaches them its
    # own way (NodeProcessInfo.agent_path).

    async def tail(
        self, info: NodeProcessInfo, path: str, limit: float, stdout: StdoutCallback
    ) -> CommandResult:
        """Stream the file the process is about to write at ``path`` (see the agent's ``tail``).

        A host that reads the target's files itself does so, without starting Node.js.
        """
        seen = info.agent_path(path)
        if isinstance(self.host, FollowsFiles):
            return await self.host.follow_file(info.pid, seen, limit, stdout)
        return await self.run("tail", str(info.pid), seen, str(limit), stdout=stdout, limit=None)

    async def signal_follow(
        self, info: NodeProcessInfo, signal: str, directory: str, limit: float, stdout: StdoutCallback
    ) -> CommandResult:
        """Send the snapshot ``signal`` and stream the file the process writes in ``directory``."""
        seen = info.agent_path(directory)
        return await self.run(
            "signal-follow", str(info.pid), signal, seen, str(limit), stdout=stdout, limit=None
        )

    async def remove(self, info: NodeProcessInfo, path: str) -> None:
        await self.call("remove", info.agent_path(path))

    async def call(self, *args: str, limit: float = 30) -> dict[str, Any]:
        """Run a subcommand and return its one JSON reply; a vanished target is ``TargetExited``."""
        result = await self.run(*args, limit=limit)
        reply = _reply(result)
        vanished = result.exit_code == 127 and self.node.startswith("/proc/")
        if result.exit_code == AgentExit.GONE or reply.get("error") == "gone" or vanished:
            raise TargetExited(f"The target process on {self.host.description} exited.")
        if result.exit_code != 0 or not reply:
            raise CaptureError(
                f"heapsnap's agent failed ({args[0]}, exit {result.exit_code}): {_detail(result)}"
            )
        return reply

    async def probe(self, pid: int | None = None) -> ProbeResult:
        return ProbeResult.from_json(await self.call("probe", *([str(pid)] if pid is not None else [])))

    async def writable(self, info: NodeProcessInfo, dirs: list[str]) -> list[DirCheck]:
        """``dirs`` (as the process names them) checked as the process's user sees them."""
        reply = await self.call("writable", str(info.pid), *(info.agent_path(d) for d in dirs))
        return [DirCheck(**{**answer, "dir": d}) for d, answer in zip(dirs, reply["dirs"], strict=True)]

    async def activate(self, pid: int, port: int, wait: float) -> tuple[list[int], bool]:
        """Open the inspector of ``pid``; the new ports it listens on, and whether ``port`` was taken."""
        reply = await self.call("activate", str(pid), str(port), str(wait), limit=wait + 30)
        return [int(p) for p in reply["ports"]], bool(reply["taken"])

    async def closed(self, pid: int, port: int, wait: float) -> bool:
        """Whether ``pid`` stopped listening on ``port`` (or is gone) within ``wait`` seconds."""
        try:
            reply = await self.call("closed", str(pid), str(port), str(wait), limit=wait + 30)
        except TargetExited:
            return True
        return bool(reply["closed"])


def _reply(result: CommandResult) -> dict[str, Any]:
    lines = result.stdout.decode(errors="replace").strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        return {}
    try:
        reply = json.loads(lines[-1])
    except ValueError:
        return {}
    return reply if isinstance(reply, dict) else {}


def _detail(result: CommandResult) -> str:
    return result.stderr.decode(errors="replace").strip()[-500:]
