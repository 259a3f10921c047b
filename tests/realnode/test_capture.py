"""Captures of Node.js in real containers by the operator running as a pod from its image,
installed by its chart: each test applies a HeapSnapshot with kubectl and reads the result
from the resource and from the bucket."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest

from heapsnap.analysis.stream import StreamingSummary
from tests.operator.test_e2e import failure
from tests.realnode.conftest import RealWorld

pytestmark = [pytest.mark.realnode, pytest.mark.cluster, pytest.mark.s3, pytest.mark.slow]

PLANTED = r"""
class PlantedThing { constructor(i) { this.i = i; } }
globalThis.planted = Array.from({length: Number(process.env.COUNT || 12345)}, (_, i) => new PlantedThing(i));
setInterval(() => {}, 1000);
console.log('ready');
"""
# About 270 bytes per object in the snapshot: LEAKY objects make a heap of any size.
LEAKY = r"""
class LeakyThing { constructor(i) { this.id = i; this.payload = 'leak-' + i; } }
globalThis.leaked = [];
for (let i = 0; i < Number(process.env.COUNT || 100000); i++) globalThis.leaked.push(new LeakyThing(i));
setInterval(() => {}, 1000);
console.log('ready');
"""
GROWING = r"""
class LeakyThing { constructor(i) { this.id = i; this.payload = 'leak-' + i; } }
globalThis.kept = [];
let i = 0;
setInterval(() => { for (let k = 0; k < 2000; k++) globalThis.kept.push(new LeakyThing(i++)); }, 100);
console.log('ready');
"""


def counts(obj: dict[str, object]) -> dict[str, int]:
    summary = obj["status"]["summary"]  # type: ignore[index]
    return {c["name"]: c["count"] for c in summary["topConstructors"]}


def test_distroless_target_without_shell_or_node_on_path(world: RealWorld) -> None:
    target = world.target("distroless", PLANTED, image="distroless")
    # What makes it distroless: no shell to exec, no node on PATH, pid 1 in its own namespace.
    no_shell = world.cluster.kubectl("exec", "distroless", "-n", target.namespace, "--", "sh", "-c", "true",
                                     check=False)  # fmt: skip
    assert no_shell.returncode != 0
    no_node = world.cluster.kubectl(
        "exec", "distroless", "-n", target.namespace, "--", "node", "-v", check=False
    )
    assert no_node.returncode != 0
    world.apply("distroless", world.snapshot_spec("distroless"))
    obj = world.wait_phase("distroless")
    status = obj["status"]
    assert status["phase"] == "Succeeded", failure(obj)
    assert status["target"]["pid"] == 1
    stored = world.stored(obj)
    assert hashlib.sha256(stored).hexdigest() == status["artifact"]["sha256"]
    assert len(stored) == status["artifact"]["compressedBytes"]
    assert counts(obj)["PlantedThing"] == 12345
    # The stored object is a whole snapshot: heapsnap's own reader agrees with the status.
    streaming = StreamingSummary()
    streaming.feed(gzip.decompress(stored) if stored[:2] == b"\x1f\x8b" else stored)
    assert {c.name: c.count for c in streaming.finish().top_by_count}["PlantedThing"] == 12345
    assert {"TargetResolved", "Succeeded"} <= set(world.events("distroless"))


def test_debian_target_on_a_current_node(world: RealWorld) -> None:
    world.target("debian24", PLANTED, image="debian", major="24", env={"COUNT": "54321"})
    world.apply("debian24", world.snapshot_spec("debian24"))
    obj = world.wait_phase("debian24")
    assert obj["status"]["phase"] == "Succeeded", failure(obj)
    assert counts(obj)["PlantedThing"] == 54321
    assert obj["status"]["target"]["pid"] == 1


def test_read_only_root_without_a_writable_volume_streams(world: RealWorld) -> None:
    world.target("readonly", PLANTED, read_only=True, run_as_user=65532)
    world.apply("readonly", world.snapshot_spec("readonly"))
    obj = world.wait_phase("readonly")
    assert obj["status"]["phase"] == "Succeeded", failure(obj)
    assert obj["status"]["target"]["transfer"] == "stream"
    assert counts(obj)["PlantedThing"] == 12345


def test_read_only_root_with_an_emptydir_at_tmp_uses_a_tempfile(world: RealWorld) -> None:
    world.target("tmpdir", PLANTED, read_only=True, run_as_user=65532, tmp_volume=True)
    world.apply("tmpdir", world.snapshot_spec("tmpdir"))
    obj = world.wait_phase("tmpdir")
    assert obj["status"]["phase"] == "Succeeded", failure(obj)
    assert obj["status"]["target"]["transfer"] == "tempfile"


def test_an_ephemeral_storage_limit_means_no_tempfile(world: RealWorld) -> None:
    world.target("ephemeral", PLANTED, tmp_volume=True, ephemeral_storage="64Mi")
    world.apply("ephemeral", world.snapshot_spec("ephemeral"))
    obj = world.wait_phase("ephemeral")
    assert obj["status"]["phase"] == "Succeeded", failure(obj)
    assert obj["status"]["target"]["transfer"] == "stream"


def test_preflight_reads_the_containers_real_cgroup_limit_and_refuses(world: RealWorld) -> None:
    target = world.target("tight", LEAKY, memory="160Mi", env={"COUNT": "400000"})
    world.apply("tight", world.snapshot_spec("tight"))
    obj = world.wait_phase("tight")
    reason, message = failure(obj)
    assert (obj["status"]["phase"], reason) == ("Failed", "InsufficientMemory"), message
    # Both numbers, as the container's own cgroup has them.
    usage = re.search(r"limit 160 MiB - usage (\d+) MiB", message)
    assert usage and 0 < int(usage.group(1)) < 160, message
    assert target.restarts() == 0
    assert world.objects() == [] or not any("tight" in key for key in world.objects())


def test_preflight_skip_on_a_target_that_cannot_fit_is_oom_killed_and_says_so(world: RealWorld) -> None:
    target = world.target("oom", LEAKY, memory="160Mi", env={"COUNT": "400000"})
    before = world.objects()
    world.apply("oom", world.snapshot_spec("oom", preflight="skip"))
    obj = world.wait_phase("oom")
    reason, message = failure(obj)
    assert obj["status"]["phase"] == "Failed"
    assert reason == "ContainerRestarted" and "OOMKilled" in message, (reason, message)
    world.cluster.kubectl("wait", "--for=condition=Ready", "pod/oom", "-n", target.namespace, "--timeout=60s")
    last = target.pod()["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["reason"] == "OOMKilled"
    assert world.objects() == before
    assert world.uploads() == []


def test_series_of_a_leaking_distroless_target_names_the_suspect(world: RealWorld) -> None:
    world.target("growing", GROWING)
    world.apply("growing", world.snapshot_spec("growing", series={"count": 3, "intervalSeconds": 2}))
    obj = world.wait_phase("growing", timeout=300)
    status = obj["status"]
    assert status["phase"] == "Succeeded", failure(obj)
    assert len(status["artifacts"]) == 3
    assert "LeakyThing" in [s["name"] for s in status["leakSuspects"]["suspects"]]


def test_kubectl_heapsnap_capture_wait_and_get(world: RealWorld, tmp_path: Path) -> None:
    world.target("plugin", PLANTED, env={"COUNT": "4321"})
    captured = world.kubectl_heapsnap(
        "capture", "plugin", "--s3", "s3://snaps/plugin", "--endpoint", world.s3.endpoint, "--path-style",
        "--region", "us-east-1", "--credentials-secret", "s3-credentials", "--wait",
    )  # fmt: skip
    assert captured.returncode == 0, captured.stderr
    listed = world.cluster.kubectl("get", "heapsnapshots", "-n", "hs-apps", "-o", "json").stdout
    items = json.loads(listed)["items"]
    (obj,) = [o for o in items if o["spec"]["target"].get("podName") == "plugin"]
    assert obj["status"]["phase"] == "Succeeded" and counts(obj)["PlantedThing"] == 4321
    download = tmp_path / "plugin.heapsnapshot.gz"
    got = world.kubectl_heapsnap("get", obj["metadata"]["name"], "-o", str(download))
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(download.read_bytes()).hexdigest() == obj["status"]["artifact"]["sha256"]


def test_a_heapsnapshot_in_a_namespace_the_operator_does_not_watch_is_not_touched(world: RealWorld) -> None:
    world.target("elsewhere", PLANTED, namespace="hs-other")
    world.apply("elsewhere", world.snapshot_spec("elsewhere"), namespace="hs-other")
    # Meanwhile a watched one goes all the way: the operator is working, just not there.
    world.target("here", PLANTED, env={"COUNT": "10"})
    world.apply("here", world.snapshot_spec("here"))
    assert world.wait_phase("here")["status"]["phase"] == "Succeeded"
    untouched = world.get("elsewhere", namespace="hs-other")
    assert "status" not in untouched and not untouched["metadata"].get("finalizers"), untouched


def test_the_operators_own_token_cannot_exec_into_pods_of_other_namespaces(world: RealWorld) -> None:
    world.target("private", PLANTED, namespace="hs-other")
    world.target("mine", PLANTED, env={"COUNT": "10"})
    pod = world.operator_pod()
    account = pod["spec"]["serviceAccountName"]
    kubeconfig = world.cluster.kubeconfig_for_service_account("heapsnap-system", account)
    denied = world.cluster.kubectl("exec", "private", "-n", "hs-other", "--", "/nodejs/bin/node", "-v",
                                   check=False, kubeconfig=kubeconfig)  # fmt: skip
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    allowed = world.cluster.kubectl("exec", "mine", "-n", "hs-apps", "--", "/nodejs/bin/node", "-v",
                                    kubeconfig=kubeconfig)  # fmt: skip
    assert allowed.stdout.startswith("v20.")


def test_the_operator_pod_runs_as_the_chart_says(world: RealWorld) -> None:
    """The chart's securityContext holds in a real container: non-root, read-only root,
    no capabilities, and the image's own entrypoint."""
    pid = world.operator_pid()
    proc = Path(f"/proc/{pid}")
    status = dict(
        line.split(":\t", 1) for line in (proc / "status").read_text().splitlines() if ":\t" in line
    )
    assert status["Uid"].split()[:2] == ["65532", "65532"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    root = next(line for line in (proc / "mountinfo").read_text().splitlines() if line.split()[4] == "/")
    assert "ro" in root.split()[5].split(","), root
    cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    assert cmdline[1].endswith(b"/opt/heapsnap/bin/heapsnap-operator"), cmdline
