"""The operator's main loop: health endpoint, Lease, kopf and the TTL sweep together.

Serves ``/healthz`` at once, waits for the Lease when leader election is on, then runs
kopf in-process with the TTL sweep beside it. Losing the Lease stops everything (exit
code 1), so the pod restarts as a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import kopf
from kopf._core.engines.peering import Identity

from heapsnap.controller import handlers
from heapsnap.controller.backends import RealBackends
from heapsnap.controller.capture import Limits
from heapsnap.controller.health import serve_health
from heapsnap.controller.leader import LeaderElector
from heapsnap.controller.metrics import Metrics
from heapsnap.controller.policy import PolicyController
from heapsnap.controller.settings import Settings
from heapsnap.controller.ttl import sweep_forever
from heapsnap.k8s.api import connect
from heapsnap.k8s.memory import make_source
from heapsnap.k8s.objects import Cluster
from heapsnap.k8s.policyops import PolicyCluster
from heapsnap.sinks import s3

logger = logging.getLogger(__name__)


async def run(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Run until ``stop`` is set (or SIGTERM/SIGINT); return the exit code."""
    assert handlers.capture_snapshot is not None  # importing handlers registers them with kopf
    stop = stop or asyncio.Event()
    # kopf installs its own handlers when it starts; handlers.take_back_signals re-installs these.
    handlers.stop_on_signals(stop)
    api = connect()
    await asyncio.to_thread(api.warm_up)
    await asyncio.to_thread(s3.warm_up)
    limits = Limits(max_concurrent=settings.max_concurrent_captures)
    metrics = Metrics()
    metrics.watch_slots(lambda: limits.active, lambda: limits.waiting)
    memo = kopf.Memo(
        cluster=Cluster(api),
        backends=RealBackends(api),
        limits=limits,
        metrics=metrics,
        settings=settings,
        stop=stop,
    )
    elector = (
        LeaderElector(api, settings.lease_name, settings.lease_namespace, settings.identity)
        if settings.leader_election
        else None
    )
    async with serve_health(settings.health_port, metrics=metrics):
        if elector is not None:
            acquired = asyncio.ensure_future(elector.acquire())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({acquired, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not acquired.done():
                acquired.cancel()
                return 0
            stopped.cancel()
        metrics.leader.set(1)
        operator = asyncio.ensure_future(
            kopf.operator(
                registry=kopf.get_default_registry(),
                clusterwide=settings.clusterwide,
                namespaces=settings.namespaces,
                standalone=True,
                # kopf would otherwise derive it from getpass.getuser(), which fails for a UID
                # without a passwd entry (the image's 65532).
                identity=Identity(settings.identity),
                memo=memo,
                stop_flag=stop,
            )
        )
        sweeper = asyncio.ensure_future(sweep_forever(api, settings.namespaces))
        policies = PolicyController(
            PolicyCluster(api),
            make_source(api, settings.memory_source),
            namespaces=settings.namespaces,
            global_limit=settings.max_concurrent_captures,
            metrics=metrics,
        )
        policing = asyncio.ensure_future(policies.run(settings.policy_interval))
        keeper = asyncio.ensure_future(elector.keep()) if elector is not None else None
        watched = {operator} | ({keeper} if keeper is not None else set())
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        lost = keeper is not None and keeper.done()
        stop.set()
        failed = False
        try:
            await operator
        except asyncio.CancelledError:
            pass
        except Exception:
            # Never silently: an operator that stops by itself must say why and exit non-zero.
            logger.exception("kopf stopped with an error")
            failed = True
        for task in (sweeper, policing, keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        metrics.leader.set(0)
        if elector is not None and not lost:
            await elector.release()
        return 1 if lost or failed else 0
