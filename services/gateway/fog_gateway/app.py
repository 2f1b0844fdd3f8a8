"""Wiring of the gateway: the public HTTP API in front of the services' NATS subjects."""

from typing import Any

from fastapi import FastAPI

from fog_gateway import __version__, problems
from fog_gateway.access_log import AccessLogMiddleware
from fog_gateway.authz import Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.chat_feed import ChatFeed, ChatWaiters, TimelineChain
from fog_gateway.config import Settings
from fog_gateway.heap import HeapFreezer
from fog_gateway.job_feed import JobFeed, JobWatchers
from fog_gateway.middleware import BodySizeLimitMiddleware, RequestIdMiddleware, SourceRateLimitMiddleware
from fog_gateway.node_link import HeartbeatRelay, NodeLinks
from fog_gateway.ratelimit import RateLimiter
from fog_gateway.routes import (
    admin,
    api_keys,
    auth,
    conversations,
    events,
    files,
    groups,
    jobs,
    keys,
    nodes,
    people,
    sync,
)
from fog_gateway.routes import platform as platform_status
from fog_gateway.scheduler_gate import SchedulerGate
from fog_gateway.security import Verifier
from fog_gateway.sync_batches import SyncBatcher
from fog_gateway.tolerant import read
from fog_shared.bus import push
from fog_shared.commands.gateway import (
    ASSIGNMENTS,
    PREPARATIONS,
    TIMELINE,
    AssignmentPush,
    Preparation,
    TimelinePush,
)
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

#: the gateway keeps nothing durable, so it has no schema and no migrations
MIGRATIONS = None


def build_app(settings: CommonSettings) -> FastAPI:
    assert isinstance(settings, Settings)
    runtime = ServiceRuntime(settings, migrations_dir=None, uses_database=False)
    api = FastAPI(title="Fog API", version=__version__, openapi_url="/openapi.json")
    problems.install(api)
    verifier = Verifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        access_ttl_s=settings.access_token_ttl_s,
        timeout_s=settings.request_timeout_s,
        credential_cache_s=settings.credential_cache_s,
    )

    async def start_verifier() -> None:
        await verifier.start(runtime.broker, runtime.js)

    runtime.after_start(start_verifier)
    calls = ServiceCalls(runtime.broker, settings.request_timeout_s)
    authz = Authorizer(verifier, RateLimiter(settings.rate_per_principal_per_s, settings.burst_per_principal))
    for module in (auth, api_keys, admin):
        api.include_router(module.build_router(calls, authz), responses=problems.COMMON_ERRORS)
    api.include_router(events.build_router(lambda: runtime.js, calls, authz), responses=problems.COMMON_ERRORS)
    status_routes = platform_status.build_router(lambda: runtime.nc, runtime.status, authz)
    api.include_router(status_routes, responses=problems.COMMON_ERRORS)
    relay, links = HeartbeatRelay(runtime.broker, flush_s=settings.heartbeat_flush_s), NodeLinks()
    verifier.on_node_revoked.append(links.revoked)
    runtime.in_background("heartbeat-relay", relay.run)
    runtime.report_in_status("node_connections", lambda: len(links))
    gate = SchedulerGate()  # one per gateway: while the scheduler is away, one node session asks it again
    node_routes = nodes.build_router(calls, authz, relay, links, settings.node_heartbeat_interval_s, gate)
    api.include_router(node_routes, responses=problems.COMMON_ERRORS)
    watchers = JobWatchers()
    feed = JobFeed(links, watchers, calls)

    async def follow_jobs() -> None:
        await feed.start(runtime.js)

    runtime.after_start(follow_jobs)

    # No queue group: every gateway hears every push, and the one holding a node's link sends it on.
    # On the raw client (fog_shared.bus.push): FastStream's per-message cost was most of a push's trip.
    async def follow_assignments() -> None:
        await push.subscribe(runtime.nc, ASSIGNMENTS, AssignmentPush, feed.on_push)
        await push.subscribe(runtime.nc, PREPARATIONS, Preparation, feed.on_preparation)

    runtime.after_start(follow_assignments)

    if settings.gc_freeze_every_s > 0:
        runtime.in_background("heap-freezer", HeapFreezer(every_s=settings.gc_freeze_every_s).run)
    api.include_router(jobs.build_router(calls, authz, watchers), responses=problems.COMMON_ERRORS)
    chat_waiters = ChatWaiters()
    chain = TimelineChain(chat_waiters)
    chat_feed = ChatFeed(chat_waiters, chain)

    # No queue group either: every gateway keeps its own chain of every push. Read tolerantly: a newer messaging's
    # fields are left out (docs/architecture.md, "Mixed versions"), as for the service replies.
    @runtime.broker.subscriber(TIMELINE, title="timeline", description="A TimelinePush (fog_shared.commands.gateway)")
    async def timeline_pushed(push: dict[str, Any]) -> None:
        chain.on_push(read(TimelinePush, push))

    async def follow_chat() -> None:
        await chat_feed.start(runtime.js)

    runtime.after_start(follow_chat)
    for module in (conversations, groups, keys, files, people):
        api.include_router(module.build_router(calls, authz), responses=problems.COMMON_ERRORS)
    syncs = SyncBatcher(calls)
    runtime.in_background("sync-batches", syncs.run)
    api.include_router(sync.build_router(authz, chat_waiters, chain, syncs), responses=problems.COMMON_ERRORS)
    # Added innermost first: a request meets the request id, the access log, the size limit, then the rate limit.
    api.add_middleware(
        SourceRateLimitMiddleware, limiter=RateLimiter(settings.rate_per_source_per_s, settings.burst_per_source)
    )
    api.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.access_log != "off":
        api.add_middleware(AccessLogMiddleware, every=settings.access_log == "all")
    api.add_middleware(RequestIdMiddleware)
    return runtime.http_app(api)
