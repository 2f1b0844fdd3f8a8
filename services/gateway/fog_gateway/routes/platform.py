"""``GET /v1/admin/status``: every service and each of its replicas, as they see themselves (``fogctl status``).

Each replica answers its service's status query (``fog_shared.commands.status``); the gateway asks each service
once and gathers whatever answers within ``GATHER_S``, so a service with no replica, or one that cannot reach
NATS, shows as none. The gateways too, this one included: when it hears none (its own NATS connection is down),
it shows itself alone, its checks saying why.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.problems import GUARDED_ERRORS
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands.status import PlatformStatus, ReplicaStatus, ServiceStatus
from fog_shared.subjects import query_subject

log = logging.getLogger(__name__)

#: how long the replicas of each service have to answer (they are asked at once, in parallel)
GATHER_S = 0.5
SERVICES = ("auth", "registry", "scheduler", "messaging", "gateway")


def build_router(
    nc: Callable[[], NatsClient], itself: Callable[[], Awaitable[ReplicaStatus]], authz: Authorizer
) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, prefix="/v1/admin", tags=["admin"], responses=GUARDED_ERRORS)
    Admin = Annotated[Principal, Depends(authz.allow(PEOPLE, roles=("admin",)))]

    @router.get("/status", response_model=PlatformStatus)
    async def platform_status(_: Admin) -> PlatformStatus:
        """Every service with each replica that answered within half a second: its checks (NATS, PostgreSQL,
        migrations, background tasks) and what it leads. ``ok`` only when every service has a replica and
        every check of every replica is ``ok``."""
        gathered = await asyncio.gather(*(_replicas(nc(), service) for service in SERVICES))
        services = [ServiceStatus(service=s, replicas=r) for s, r in zip(SERVICES, gathered, strict=True)]
        if not services[-1].replicas:  # not even this one: it cannot reach NATS, and its checks say so
            services[-1] = ServiceStatus(service="gateway", replicas=[await itself()])
        return PlatformStatus(ok=all(service.ok for service in services), services=services)

    return router


async def _replicas(nc: NatsClient, service: str) -> list[ReplicaStatus]:
    """Whoever of ``service`` answers its status query within ``GATHER_S``, sorted by replica (none when the
    gateway's own NATS connection is closed: the gateway's checks say so)."""
    answers: list[ReplicaStatus] = []
    try:
        subscription = await nc.subscribe(nc.new_inbox())
    except NatsError:
        log.warning("cannot ask %s for its status", service, exc_info=True)
        return answers
    try:
        await nc.publish(query_subject(service, "status"), b"{}", reply=subscription.subject)
        deadline = asyncio.get_running_loop().time() + GATHER_S
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                message = await subscription.next_msg(timeout=left)
            except (NatsTimeoutError, TimeoutError):
                break
            try:
                answers.append(ReplicaStatus.model_validate_json(message.data, extra="ignore"))  # a newer replica's too
            except ValidationError:
                log.warning("a status answer of %s could not be read", service, exc_info=True)
    except NatsError:
        log.warning("cannot ask %s for its status", service, exc_info=True)
    finally:
        with contextlib.suppress(NatsError):  # a connection closed meanwhile took the subscription with it
            await subscription.unsubscribe()
    return sorted(answers, key=lambda replica: replica.replica)
