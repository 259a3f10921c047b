"""The agent's exit codes: agent.js's EXIT table is the one Python reads them by."""

from __future__ import annotations

import json
import re
from pathlib import Path

import heapsnap.engine
from heapsnap._agent_exit import AgentExit

AGENT_JS = Path(heapsnap.engine.__file__).with_name("agent.js").read_text()


def test_agent_js_declares_the_same_exit_codes_as_python() -> None:
    match = re.search(r"^const EXIT = Object\.freeze\((\{.*\})\);$", AGENT_JS, re.MULTILINE)
    assert match, "agent.js declares its exit codes on one line: const EXIT = Object.freeze({...});"
    declared = json.loads(re.sub(r"(\w+):", r'"\1":', match.group(1)))
    assert declared == {code.name: code.value for code in AgentExit}


def test_agent_js_exits_only_by_its_table() -> None:
    assert re.findall(r"process\.exit\((\d+)\)", AGENT_JS) == []
    used = set(re.findall(r"process\.exit\(EXIT\.(\w+)\)", AGENT_JS))
    assert used <= set(AgentExit.__members__) and {"GONE", "TIMEOUT", "STOPPED"} <= used
