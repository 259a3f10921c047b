"""Leader election on a coordination.k8s.io Lease, so two replicas never capture twice.

The replica holding the Lease runs the operator; the others wait. A leader that cannot
renew before the Lease expires stops its operator (and exits), since another replica
may take over from then on.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from heapsnap.k8s.api import ApiConnection

logger = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    now = datetime.datetime.now(datetime.UTC)
    # MicroTime needs six fractional digits; isoformat() drops them when they are all zero.
    return now.replace(microsecond=1) if now.microsecond == 0 else now


def expired(lease: Any, now: datetime.datetime) -> bool:
    spec = lease.spec
    if not spec or not spec.holder_identity:
        return True
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None:
        return True
    deadline: datetime.datetime = renewed + datetime.timedelta(seconds=spec.lease_duration_seconds or 15)
    return deadline < now


@dataclass
class LeaderElector:
    api: ApiConnection
    name: str
    namespace: str
    identity: str
    duration_seconds: int = 15
    renew_seconds: float = 5.0
    retry_seconds: float = 2.0

    async def _try(self) -> bool:
        """Acquire or renew once; ``True`` when we hold the Lease afterwards."""
        coord = self.api.coordination
        now = _now()
        try:
            lease = await self.api.call(coord.read_namespaced_lease, self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=self.duration_seconds,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            try:
                await self.api.call(coord.create_namespaced_lease, self.namespace, body)
            except ApiException as create_error:
                if create_error.status == 409:
                    return False
                raise
            return True
        holder = lease.spec.holder_identity if lease.spec else None
        if holder != self.identity and not expired(lease, now):
            return False
        if holder != self.identity:
            lease.spec.acquire_time = now
            lease.spec.lease_transitions = (lease.spec.lease_transitions or 0) + 1
        lease.spec.holder_identity = self.identity
        lease.spec.renew_time = now
        lease.spec.lease_duration_seconds = self.duration_seconds
        try:
            # resourceVersion in the body makes this a compare-and-swap.
            await self.api.call(coord.replace_namespaced_lease, self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def acquire(self) -> None:
        logger.info("waiting for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            try:
                if await self._try():
                    logger.info("became leader: Lease %s/%s", self.namespace, self.name)
                    return
            except (ApiException, OSError) as error:
                logger.warning("Lease %s/%s: %s", self.namespace, self.name, error)
            await asyncio.sleep(self.retry_seconds)

    async def keep(self) -> None:
        """Renew until the Lease is lost; return then (the caller stops the operator)."""
        last = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                if not await self._try():
                    logger.error("lost Lease %s/%s to another replica", self.namespace, self.name)
                    return
                last = asyncio.get_running_loop().time()
            except (ApiException, OSError) as error:
                logger.warning("renewing Lease %s/%s failed: %s", self.namespace, self.name, error)
                if asyncio.get_running_loop().time() - last > self.duration_seconds - self.renew_seconds:
                    logger.error("could not renew Lease %s/%s in time", self.namespace, self.name)
                    return

    async def release(self) -> None:
        """Hand the Lease back on a clean shutdown so another replica takes over at once."""
        coord = self.api.coordination
        try:
            lease = await self.api.call(coord.read_namespaced_lease, self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                lease.spec.acquire_time = None
                await self.api.call(coord.replace_namespaced_lease, self.name, self.namespace, lease)
        except (ApiException, OSError) as error:
            logger.warning("releasing Lease %s/%s failed: %s", self.namespace, self.name, error)
