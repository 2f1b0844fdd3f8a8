"""``GET /v1/sync``: everything new for the caller across conversations, with long-polling."""

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.chat_feed import ChatWaiters
from fog_gateway.problems import GUARDED_ERRORS
from fog_gateway.security import Principal
from fog_shared.commands import messaging as contract

#: the longest a sync waits for something new
MAX_WAIT_MS = 30_000


def build_router(calls: ServiceCalls, authz: Authorizer, waiters: ChatWaiters) -> APIRouter:
    router = APIRouter(prefix="/v1/sync", tags=["messaging"], responses=GUARDED_ERRORS)
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
        with waiters.watch(me.user_id) as woken:
            while True:
                woken.clear()
                reply = await calls.ask(contract.SYNC, query)
                remaining = deadline - time.monotonic()
                if reply["entries"] or reply["limited"] or remaining <= 0:
                    return reply
                try:
                    await asyncio.wait_for(woken.wait(), timeout=remaining)
                except TimeoutError:
                    return reply

    return router
