"""``/v1/admin/events``, ``/dead-letters`` and ``/rebuild``: the event history, for the ``admin`` role only.

Reading goes straight to JetStream (:mod:`fog_shared.replay`) with ephemeral, ordered consumers
that ack nothing, so no read changes state or re-runs a handler. Re-driving a dead letter is the
one write: it hands the parked event back to the consumer that parked it.
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, Problem, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import messaging, scheduler
from fog_shared.commands.common import RebuildQuery
from fog_shared.replay import deadletters
from fog_shared.replay.causality import DEFAULT_LOOKBACK, Trace, trace
from fog_shared.replay.history import CursorError, Page, history, parse_cursor
from fog_shared.replay.history import Query as HistoryQuery
from fog_shared.replay.rebuild import RebuildReport
from fog_shared.replay.records import EventRecord

T = TypeVar("T")

#: an event subject filter: ``fog.evt.`` then tokens of lower-case letters, digits, ``_`` or ``*``, or ``>`` last
SUBJECT_PATTERN = r"^fog\.evt\.(>|([a-z0-9_]+|\*)(\.([a-z0-9_]+|\*))*(\.>)?)$"
Subject = Annotated[str, Query(pattern=SUBJECT_PATTERN, max_length=200, description="A subject filter, NATS wildcards")]
Since = Annotated[datetime | None, Query(description="From this time (RFC 3339; without a zone, UTC)")]
Until = Annotated[datetime | None, Query(description="Up to this time (RFC 3339; without a zone, UTC)")]
Cursor = Annotated[
    str | None,
    Query(max_length=2000, description="The `cursor` of a previous page: go on from there (wins over since)"),
]
Limit = Annotated[int, Query(ge=1, le=1000)]
AnId = Annotated[str, Query(min_length=1, max_length=200)]
Sequence = Annotated[int, Path(ge=1, le=2**63 - 1, description="The entry's sequence in the dead-letter stream")]
#: the services that can rebuild a read model from events, and the command that asks them
REBUILDERS = {"scheduler": scheduler.REBUILD, "messaging": messaging.REBUILD}
RebuildableService = Annotated[
    Literal["scheduler", "messaging"], Path(description="The service whose read model to rebuild")
]
ReadModelName = Annotated[
    str | None,
    Query(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, description="Which of its read models (else its first)"),
]
#: a replay reads a whole stream: longer than a request's usual few seconds
REBUILD_TIMEOUT_S = 120.0
Consumer = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]*$", max_length=200)]


def build_router(js: Callable[[], JetStreamContext], calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, prefix="/v1/admin", tags=["events"], responses=GUARDED_ERRORS)
    Admin = Annotated[Principal, Depends(authz.allow(PEOPLE, roles=("admin",)))]

    @router.get("/events", response_model=Page)
    async def event_history(
        _: Admin,
        subject: Subject = "fog.evt.>",
        since: Since = None,
        until: Until = None,
        aggregate_id: Annotated[str | None, AnId] = None,
        correlation_id: Annotated[str | None, AnId] = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> Page:
        """Events of a subject filter, oldest first, in pages; of one aggregate or one request if asked.

        A page lists `gaps` where the requested start is older than what a stream still holds. Its
        `cursor` continues the history, also once `more` is false (to follow new events).
        """
        query = HistoryQuery(
            subject=subject, since=_utc(since), until=_utc(until), cursor=_cursor(cursor), aggregate_id=aggregate_id,
            correlation_id=correlation_id, limit=limit,
        )  # fmt: skip
        return await _reading(lambda: history(js(), query))

    @router.get("/events/trace/{correlation_id}", response_model=Trace)
    async def event_trace(
        correlation_id: Annotated[str, Path(min_length=1, max_length=200)],
        _: Admin,
        since: Since = None,
        until: Until = None,
    ) -> Trace:
        """Every event one request caused, on every stream, as a tree by causation id with timings.

        The correlation id is the request id the gateway answered with (`X-Request-Id`). Events are
        looked for from `since` (default: 24 hours ago).
        """
        start = _utc(since) or datetime.now(UTC) - DEFAULT_LOOKBACK
        return await _reading(lambda: trace(js(), correlation_id, since=start, until=_utc(until)))

    @router.get("/dead-letters", response_model=Page)
    async def dead_letter_list(
        _: Admin, consumer: Consumer = None, since: Since = None, cursor: Cursor = None, limit: Limit = 100
    ) -> Page:
        """Events a consumer gave up on, oldest first, each with the consumer, the reason and the error."""
        query = HistoryQuery(since=_utc(since), cursor=_cursor(cursor), limit=limit)
        return await _reading(lambda: deadletters.list_dead_letters(js(), query, consumer=consumer))

    @router.get("/dead-letters/{seq}", response_model=EventRecord, responses=documented(404))
    async def dead_letter(seq: Sequence, _: Admin) -> EventRecord:
        """One dead letter: the event as it was, and why it was parked."""
        return await _reading(lambda: deadletters.show(js(), seq))

    @router.post("/dead-letters/{seq}/redrive", response_model=deadletters.Redriven, responses=documented(404, 409))
    async def redrive(seq: Sequence, _: Admin) -> deadletters.Redriven:
        """Hand a dead letter back to the consumer that parked it (after the fix), and drop the entry.

        Only that consumer handles the copy: the others handled the original already and skip it.
        """
        return await _reading(lambda: deadletters.redrive(js(), seq))

    @router.post("/rebuild/{service}", response_model=RebuildReport, responses=documented(404))
    async def rebuild(service: RebuildableService, _: Admin, read_model: ReadModelName = None) -> dict[str, Any]:
        """Rebuild one of a service's event-derived read models in a scratch copy and compare it with the live
        one. Nothing live is written.

        The scheduler's ``nodes`` (its node view, from the registry's node events; its jobs change through
        commands, not events, so there is nothing to rebuild them from); messaging's ``users`` and
        ``node_owners`` (from auth's user and node-credential events). 404 for a read model the service lacks.
        """
        query = RebuildQuery(read_model=read_model)
        return await calls.ask(REBUILDERS[service], query, timeout_s=REBUILD_TIMEOUT_S)

    return router


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _cursor(text: str | None) -> dict[str, int]:
    try:
        return parse_cursor(text)
    except CursorError as exc:
        raise Problem(400, "Bad request", str(exc), code="invalid_cursor") from None


async def _reading(work: Callable[[], Awaitable[T]]) -> T:
    """Run a JetStream read; its failures become problems (404, 409, or 503 when NATS is away)."""
    try:
        return await work()
    except deadletters.NoSuchDeadLetter as exc:
        raise Problem(404, "Not found", str(exc), code="not_found") from None
    except deadletters.NotRedrivable as exc:
        raise Problem(409, "Conflict", str(exc), code="not_redrivable") from None
    except BadRequestError as exc:
        detail = f"the event store refused the query: {exc.description}"
        raise Problem(400, "Bad request", detail, code="invalid") from None
    except (NatsError, TimeoutError) as exc:
        detail = f"the event store did not answer: {exc.__class__.__name__}"
        raise Problem(
            503, "Service unavailable", detail, code="service_unavailable", headers={"Retry-After": "1"}
        ) from None
