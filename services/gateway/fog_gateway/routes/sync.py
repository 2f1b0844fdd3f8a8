"""``GET /v1/sync``: everything new for the caller across conversations, with long-polling; and
``/v1/sync/live``, the same as a WebSocket stream.

Both read the messaging service's sync and nothing else (asked together with the other syncs
woken at the same moment: ``fog_gateway.sync_batches``), so a client that reconnects with its
last ``next`` token gets exactly what it has not had: no loss, no duplicates.
"""

import asyncio
import contextlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.chat_feed import LIVE_FRAMES, ChatWaiters, TimelineChain, Watcher
from fog_gateway.node_link import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, bearer_of
from fog_gateway.problems import GUARDED_ERRORS, Problem
from fog_gateway.security import Principal
from fog_gateway.sync_batches import SyncBatcher, fed_frame
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.commands import messaging as contract

log = logging.getLogger(__name__)
#: the longest a sync waits for something new
MAX_WAIT_MS = 30_000
#: a live stream looks again this often even without a wake-up (a wake-up may be missed while
#: the gateway's event subscription reconnects)
LIVE_RECHECK_S = 15.0
#: a live stream whose sync is refused by an unavailable service tries again after this
LIVE_RETRY_S = 1.0
CLOSE_BAD_TOKEN = 4400


def build_router(authz: Authorizer, waiters: ChatWaiters, chain: TimelineChain, syncs: SyncBatcher) -> APIRouter:
    router = APIRouter(
        route_class=RepliesReadTolerantly, prefix="/v1/sync", tags=["messaging"], responses=GUARDED_ERRORS
    )
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]

    @router.get("", response_model=contract.SyncReply)
    async def sync(
        me: Person,
        since: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
        timeout_ms: Annotated[int, Query(ge=0, le=MAX_WAIT_MS)] = 0,
    ) -> dict[str, Any]:
        """Changes after ``since`` (none: from the start) in order, and the ``next`` token. With
        ``timeout_ms``, waits up to that long for something new when there is nothing yet.
        ``limited`` (with ``gap``) says changes were left out: too many, or past retention."""
        assert me.user_id is not None
        query = contract.SyncQuery(by=me, since=since, limit=limit)
        deadline = time.monotonic() + timeout_ms / 1000
        with waiters.watch(me.user_id) as watcher:
            while True:
                watcher.woken.clear()
                synced = await syncs.sync(query)
                remaining = deadline - time.monotonic()
                if synced.entries or synced.limited or remaining <= 0:
                    return synced.reply()
                try:
                    async with asyncio.timeout(remaining):  # not wait_for: it can swallow a cancellation
                        await watcher.woken.wait()
                except TimeoutError:
                    return synced.reply()

    @router.websocket("/live")
    async def live(websocket: WebSocket, since: Annotated[str | None, Query(max_length=32)] = None) -> None:
        """Your changes as they happen: ``{"type": "sync", ...}`` frames shaped like ``GET /v1/sync``
        replies, each with its ``next`` token. Reconnect with the last one you processed."""
        await websocket.accept()
        try:
            me = await authz.identify(bearer_of(websocket) or "")
        except Problem as refused:
            await websocket.close(code=CLOSE_UNAUTHORIZED, reason=refused.detail[:120])
            return
        if me.kind not in PEOPLE or me.user_id is None:
            await websocket.close(code=CLOSE_FORBIDDEN, reason="only people have conversations")
            return
        stream = asyncio.create_task(_stream(websocket, syncs, waiters, chain, me, since))
        try:
            while True:
                await websocket.receive_text()  # nothing is expected; this notices the close
        except WebSocketDisconnect:
            pass
        finally:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stream

    return router


async def _stream(
    websocket: WebSocket,
    syncs: SyncBatcher,
    waiters: ChatWaiters,
    chain: TimelineChain,
    me: Principal,
    since: str | None,
) -> None:
    """Sync, then send what the chain feeds until something only a sync shows (a wake-up from an
    event no push brought, a gap in the chain); then sync again from what was sent."""
    assert me.user_id is not None
    with waiters.watch(me.user_id) as watcher:
        while True:
            watcher.woken.clear()
            if watcher.fed and not watcher.stale:
                await _send_pushed(websocket, *chain.flush(watcher))
            else:
                # What the chain brought goes first, and the sync starts after it. The stream is
                # off the chain before anything is awaited: pushes meanwhile are kept for its join.
                brought = chain.flush(watcher) if watcher.fed else None
                watcher.fed, watcher.stale, watcher.joining = False, False, True
                if brought is not None:
                    since = contract.sync_token(brought[1])
                    await _send_pushed(websocket, *brought)
                try:
                    synced = await syncs.sync(contract.SyncQuery(by=me, since=since))
                except ServiceUnavailable:
                    watcher.joining = False
                    await asyncio.sleep(LIVE_RETRY_S)  # a pause before asking again, not a synchronisation
                    continue
                except Problem as refused:  # a token this API never gave
                    await websocket.close(code=CLOSE_BAD_TOKEN, reason=refused.detail[:120])
                    return
                if synced.entries or synced.limited:
                    LIVE_FRAMES.labels("synced").inc()
                    await websocket.send_text(synced.frame())
                since = synced.next
                if synced.more:
                    watcher.joining = False
                    watcher.stale = True
                    continue
                _join(chain, watcher, synced.next)
            if watcher.queued or watcher.stale:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LIVE_RECHECK_S):  # not wait_for: it can swallow a cancellation
                    await watcher.woken.wait()
                    continue
            watcher.stale = True  # nothing for a while: look again, in case a wake-up was missed


def _join(chain: TimelineChain, watcher: Watcher, synced_to: str) -> None:
    position = contract.token_position(synced_to)
    if position is None:  # not a token of the chain's kind: the stream stays on syncs
        watcher.joining = False
        return
    watcher.since = position
    chain.join(watcher)


async def _send_pushed(websocket: WebSocket, texts: list[str], through: int) -> None:
    if texts:
        LIVE_FRAMES.labels("pushed").inc()
        await websocket.send_text(fed_frame(texts, through))
