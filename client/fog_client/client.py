"""``FogClient``: Fog's HTTP API as typed async calls."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response as HandshakeResponse

from fog_client import retries as retries_
from fog_client.chat import ChatCalls
from fog_client.errors import ApiError, parse_retry_after
from fog_client.events import EventPage, RebuildReport, Redriven, StoredEvent, Trace
from fog_client.models import (
    ApiKey,
    ArraySummary,
    Capabilities,
    CreatedApiKey,
    Explanation,
    Items,
    Job,
    JobArray,
    JobFiles,
    JobOutput,
    JobPage,
    JobSpec,
    Location,
    Me,
    Node,
    NodeCredential,
    PasswordReset,
    PlatformStatus,
    Registered,
    RegisteredNode,
    RotatedKey,
    Session,
    SessionsEnded,
    Tokens,
    User,
)
from fog_client.paths import segment as _segment

M = TypeVar("M", bound=BaseModel)
#: a query string; a list value repeats the parameter (``label=a=1&label=b=2``)
Query = Mapping[str, str | int | list[str]]

JOB_UPDATES_PATH = "/v1/jobs/updates"
#: a trace or a rebuild reads whole streams: the gateway gives a rebuild up to 120 s
SCANNING_TIMEOUT_S = 130.0
#: an array's submit or cancel writes up to 100,000 jobs: the gateway gives it up to 60 s
ARRAY_TIMEOUT_S = 70.0
#: the largest WebSocket message accepted: a job's spec alone may carry a 1 MiB argv
MAX_MESSAGE_BYTES = 4 * 2**20
_REFUSING_CLOSE_CODES = (4401, 4403)
# websockets logs every handshake header at DEBUG, Authorization included: its logger never gets that verbose.
_websocket_log = logging.getLogger("fog_client.websocket")
_websocket_log.setLevel(logging.INFO)


class FogClient(ChatCalls):
    """One gateway, one set of credentials.

    ``api_key`` (an API key or a node credential) is sent as the bearer when given; otherwise the
    session's access token is. A call made with the session that is refused with 401 is retried once
    after refreshing the tokens, when a refresh token is held; ``on_tokens`` hears of every new pair
    (from ``login`` and from refreshes) so that the caller can keep them. Refusals raise ``ApiError``;
    an unreachable gateway raises ``httpx.TransportError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_tokens: Callable[[Tokens], None] | None = None,
        request_id: str | None = None,
        retries: int = retries_.RETRIES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: how many times a call that failed on the way is tried again (``fog_client.retries``); 0: never
        self.retries = retries
        self.access_token, self.refresh_token, self.api_key = access_token, refresh_token, api_key
        self.on_tokens = on_tokens
        headers = {"X-Request-ID": request_id} if request_id else {}
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport, headers=headers)
        # Refresh tokens rotate, and presenting a rotated-away one revokes the whole session: calls that
        # hit 401 together must share one refresh instead of racing with the same refresh token.
        self._refreshing = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- accounts and sessions -------------------------------------------------------------------

    async def register(self, email: str, password: str, *, roles: Sequence[str] = ("user",)) -> str:
        """Create an account (roles ``user`` and/or ``provider``); returns its user id."""
        body = {"email": email, "password": password, "roles": list(roles)}
        return _parse(Registered, await self._call("POST", "/v1/auth/register", body, auth=False)).user_id

    async def login(self, email: str, password: str) -> Tokens:
        """Open a session; its tokens are kept for the following calls (and handed to ``on_tokens``)."""
        body = {"email": email, "password": password}
        tokens = _parse(Tokens, await self._call("POST", "/v1/auth/login", body, auth=False))
        self._keep(tokens)
        return tokens

    async def refresh(self) -> Tokens:
        """Trade the refresh token for a new pair (the old refresh token stops working)."""
        if self.refresh_token is None:
            raise RuntimeError("no refresh token: log in first")
        try:
            reply = await self._call("POST", "/v1/auth/refresh", {"refresh_token": self.refresh_token}, auth=False)
        except ApiError as exc:
            if exc.status == 401:  # refused for good: presenting it again could only look like reuse
                self.refresh_token = None
            raise
        tokens = _parse(Tokens, reply)
        self._keep(tokens)
        return tokens

    async def logout(self) -> None:
        """End the session on the server, then forget its tokens."""
        if self.refresh_token is None:
            raise RuntimeError("no refresh token: not logged in")
        await self._call("POST", "/v1/auth/logout", {"refresh_token": self.refresh_token}, auth=False)
        self.access_token = self.refresh_token = None

    async def me(self) -> Me:
        return _parse(Me, await self._call("GET", "/v1/me"))

    async def change_password(self, current_password: str, new_password: str) -> int:
        """Change the password (with a session's access token, not an API key). This session stays; every
        other one ends: how many did."""
        body = {"current_password": current_password, "new_password": new_password}
        return _parse(SessionsEnded, await self._call("POST", "/v1/me/password", body)).sessions_ended

    async def reset_password(self, token: str, new_password: str) -> int:
        """Set a new password with a reset token an admin issued (no session needed); every session of the
        account ends: how many did."""
        body = {"token": token, "new_password": new_password}
        reply = await self._call("POST", "/v1/auth/password-reset", body, auth=False)
        return _parse(SessionsEnded, reply).sessions_ended

    async def sessions(self) -> list[Session]:
        """The user's sessions that can still be used, the latest active first."""
        return _parse(Items[Session], await self._call("GET", "/v1/me/sessions")).items

    async def end_session(self, session_id: str) -> None:
        await self._call("DELETE", f"/v1/me/sessions/{_segment(session_id)}")

    async def end_other_sessions(self) -> int:
        """Sign out everywhere else; how many sessions ended."""
        return _parse(SessionsEnded, await self._call("POST", "/v1/me/sessions/end-others")).sessions_ended

    async def platform_status(self) -> PlatformStatus:
        """Every service and each of its replicas, as they see themselves (admins only)."""
        return _parse(PlatformStatus, await self._call("GET", "/v1/admin/status"))

    # -- API keys --------------------------------------------------------------------------------

    async def create_api_key(
        self, name: str, scopes: Sequence[str], *, expires_at: datetime | None = None
    ) -> CreatedApiKey:
        body = {"name": name, "scopes": list(scopes), "expires_at": expires_at.isoformat() if expires_at else None}
        return _parse(CreatedApiKey, await self._call("POST", "/v1/api-keys", body))

    async def list_api_keys(self) -> list[ApiKey]:
        return _parse(Items[ApiKey], await self._call("GET", "/v1/api-keys")).items

    async def revoke_api_key(self, key_id: str) -> None:
        await self._call("DELETE", f"/v1/api-keys/{_segment(key_id)}")

    # -- administration --------------------------------------------------------------------------

    async def list_users(
        self, *, limit: int | None = None, offset: int | None = None, email: str | None = None
    ) -> list[User]:
        """Accounts, oldest first; one page (the gateway's default size unless ``limit`` is given). With
        ``email``: the account with that address, if any."""
        query = {k: v for k, v in (("limit", limit), ("offset", offset), ("email", email)) if v is not None}
        return _parse(Items[User], await self._call("GET", "/v1/admin/users", params=query)).items

    async def set_roles(self, user_id: str, roles: Sequence[str]) -> User:
        path = f"/v1/admin/users/{_segment(user_id)}/roles"
        return _parse(User, await self._call("PUT", path, {"roles": list(roles)}))

    async def disable_user(self, user_id: str) -> User:
        return _parse(User, await self._call("POST", f"/v1/admin/users/{_segment(user_id)}/disable"))

    async def get_user(self, user_id: str) -> User:
        return _parse(User, await self._call("GET", f"/v1/admin/users/{_segment(user_id)}"))

    async def unlock_user(self, user_id: str) -> User:
        """End the account's lockout (too many wrong passwords)."""
        return _parse(User, await self._call("POST", f"/v1/admin/users/{_segment(user_id)}/unlock"))

    async def enable_user(self, user_id: str) -> User:
        return _parse(User, await self._call("POST", f"/v1/admin/users/{_segment(user_id)}/enable"))

    async def issue_password_reset(self, user_id: str, *, expires_in_s: int | None = None) -> PasswordReset:
        """A one-time token the user sets a new password with (``reset_password``); replaces any earlier one."""
        body = {"expires_in_s": expires_in_s} if expires_in_s is not None else None
        path = f"/v1/admin/users/{_segment(user_id)}/password-reset"
        return _parse(PasswordReset, await self._call("POST", path, body))

    async def rotate_signing_key(self) -> RotatedKey:
        return _parse(RotatedKey, await self._call("POST", "/v1/admin/signing-keys/rotate"))

    # -- events (admin) --------------------------------------------------------------------------

    async def event_history(
        self,
        *,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        aggregate_id: str | None = None,
        correlation_id: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> EventPage:
        """One page of stored events, oldest first; pass its ``cursor`` back for the next one."""
        filters = {
            "subject": subject, "since": _iso(since), "until": _iso(until), "aggregate_id": aggregate_id,
            "correlation_id": correlation_id, "cursor": cursor, "limit": limit,
        }  # fmt: skip
        query = {k: v for k, v in filters.items() if v is not None}
        return _parse(EventPage, await self._call("GET", "/v1/admin/events", params=query))

    async def event_trace(
        self, correlation_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> Trace:
        """Every event one request (its ``X-Request-ID``) caused, as a causal tree."""
        query = {k: v for k, v in (("since", _iso(since)), ("until", _iso(until))) if v is not None}
        path = f"/v1/admin/events/trace/{_segment(correlation_id)}"
        return _parse(Trace, await self._call("GET", path, params=query, timeout=SCANNING_TIMEOUT_S))

    async def dead_letters(
        self, *, consumer: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> EventPage:
        filters = {"consumer": consumer, "cursor": cursor, "limit": limit}
        query = {k: v for k, v in filters.items() if v is not None}
        return _parse(EventPage, await self._call("GET", "/v1/admin/dead-letters", params=query))

    async def dead_letter(self, seq: int) -> StoredEvent:
        return _parse(StoredEvent, await self._call("GET", f"/v1/admin/dead-letters/{int(seq)}"))

    async def redrive_dead_letter(self, seq: int) -> Redriven:
        """Hand a dead letter back to the consumer that parked it."""
        return _parse(Redriven, await self._call("POST", f"/v1/admin/dead-letters/{int(seq)}/redrive"))

    async def rebuild_read_model(self, service: str, read_model: str | None = None) -> RebuildReport:
        """Have ``service`` rebuild one of its event-derived read models (``READ_MODELS``; its first when
        ``read_model`` is None) in a scratch copy and compare it with the live one."""
        path = f"/v1/admin/rebuild/{_segment(service)}"
        params = {"read_model": read_model} if read_model else None
        # Read-only on the service's side (its scratch copy is rolled back): safe to try again.
        reply = await self._call("POST", path, params=params, timeout=SCANNING_TIMEOUT_S, idempotent=True)
        return _parse(RebuildReport, reply)

    # -- nodes -----------------------------------------------------------------------------------

    async def register_node(
        self,
        name: str,
        capabilities: Capabilities,
        *,
        labels: Mapping[str, str] | None = None,
        region: str | None = None,
        location: Location | None = None,
    ) -> RegisteredNode:
        """Offer a machine as a node (a provider's call); the reply holds its credential, shown this once."""
        body = {
            "name": name,
            "capabilities": _capabilities_body(capabilities),
            "labels": dict(labels or {}),
            "region": region,
            "location": location.model_dump(mode="json") if location else None,
        }
        return _parse(RegisteredNode, await self._call("POST", "/v1/nodes", body))

    async def list_nodes(
        self,
        *,
        status: str | None = None,
        labels: Mapping[str, str] | None = None,
        min_cpu_cores: int | None = None,
        min_memory_bytes: int | None = None,
        owner_id: str | None = None,
    ) -> list[Node]:
        """Nodes matching every filter given: a provider sees their own, an admin all of them."""
        filters = {
            "status": status,
            "min_cpu_cores": min_cpu_cores,
            "min_memory_bytes": min_memory_bytes,
            "owner_id": owner_id,
        }
        query: dict[str, str | int | list[str]] = {k: v for k, v in filters.items() if v is not None}
        if labels:
            query["label"] = [f"{key}={value}" for key, value in labels.items()]
        return _parse(Items[Node], await self._call("GET", "/v1/nodes", params=query)).items

    async def get_node(self, node_id: str) -> Node:
        return _parse(Node, await self._call("GET", f"/v1/nodes/{_segment(node_id)}"))

    async def label_node(self, node_id: str, labels: Mapping[str, str | None]) -> Node:
        """Set the node's labels named with a value, remove those named with ``None``; the others stay."""
        body = {"labels": dict(labels)}
        return _parse(Node, await self._call("PATCH", f"/v1/nodes/{_segment(node_id)}", body))

    async def resume_node(self, node_id: str) -> Node:
        """End the node's drain: it takes new work again."""
        return _parse(Node, await self._call("POST", f"/v1/nodes/{_segment(node_id)}/resume"))

    async def drain_node(self, node_id: str) -> Node:
        """Stop giving the node new work; what it runs may finish."""
        return _parse(Node, await self._call("POST", f"/v1/nodes/{_segment(node_id)}/drain"))

    async def deregister_node(self, node_id: str) -> None:
        """Remove the node; its credential stops working."""
        await self._call("DELETE", f"/v1/nodes/{_segment(node_id)}")

    async def issue_node_credential(self, node_id: str) -> NodeCredential:
        return _parse(NodeCredential, await self._call("POST", f"/v1/nodes/{_segment(node_id)}/credential"))

    async def revoke_node_credential(self, node_id: str) -> None:
        await self._call("DELETE", f"/v1/nodes/{_segment(node_id)}/credential")

    # -- jobs ------------------------------------------------------------------------------------

    async def submit_job(self, spec: JobSpec) -> Job:
        """Submit one job. A repeated ``idempotency_key`` answers the job it first created instead of a new one."""
        keyed = spec.idempotency_key is not None  # sending it again answers the same job: safe to try again
        return _parse(Job, await self._call("POST", "/v1/jobs", _spec_body(spec), idempotent=keyed))

    async def submit_array(self, spec: JobSpec, count: int) -> JobArray:
        """Submit ``count`` jobs that share one spec (each knows its ``array_index``)."""
        body = {"spec": _spec_body(spec), "count": count}
        keyed = spec.idempotency_key is not None
        reply = await self._call("POST", "/v1/jobs/array", body, timeout=ARRAY_TIMEOUT_S, idempotent=keyed)
        return _parse(JobArray, reply)

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        array_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: Literal["oldest", "newest"] | None = None,
        name: str | None = None,
    ) -> JobPage:
        """One page of your jobs, the oldest first (``order="newest"``: the last submitted first); pass its
        ``next_cursor`` back as ``cursor`` for the next one. ``status``, ``array_id`` and ``name`` narrow them."""
        filters = {
            "status": status, "array_id": array_id, "name": name, "limit": limit, "cursor": cursor, "order": order
        }  # fmt: skip
        query: dict[str, str | int | list[str]] = {k: v for k, v in filters.items() if v is not None}
        return _parse(JobPage, await self._call("GET", "/v1/jobs", params=query))

    async def iter_jobs(
        self,
        *,
        status: str | None = None,
        array_id: str | None = None,
        limit: int | None = None,
        order: Literal["oldest", "newest"] | None = None,
        name: str | None = None,
    ) -> AsyncGenerator[Job, None]:
        """Every job matching the filters, following the cursors; ``limit`` is the size of each page."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(
                status=status, array_id=array_id, name=name, limit=limit, cursor=cursor, order=order
            )
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get_job(self, job_id: str) -> Job:
        return _parse(Job, await self._call("GET", f"/v1/jobs/{_segment(job_id)}"))

    async def cancel_job(self, job_id: str) -> Job:
        """Ask for the job to stop. A running job may still show ``running`` until its node has killed it."""
        return _parse(Job, await self._call("POST", f"/v1/jobs/{_segment(job_id)}/cancel"))

    async def array_summary(self, array_id: str) -> ArraySummary:
        """How many of the array's jobs are in each status."""
        return _parse(ArraySummary, await self._call("GET", f"/v1/jobs/arrays/{_segment(array_id)}"))

    async def cancel_array(self, array_id: str) -> ArraySummary:
        """Cancel every job of the array that has not ended; the summary after it. Running jobs are killed
        on their nodes; ended ones stay as they are."""
        path = f"/v1/jobs/arrays/{_segment(array_id)}/cancel"
        return _parse(ArraySummary, await self._call("POST", path, timeout=ARRAY_TIMEOUT_S))

    async def wait_array(self, array_id: str, *, poll_s: float = 1.0, timeout: float | None = None) -> ArraySummary:
        """Poll until every job of the array has ended; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not (summary := await self.array_summary(array_id)).done:
                await asyncio.sleep(poll_s)
        return summary

    async def job_output(self, job_id: str, *, offset: int = 0) -> JobOutput:
        """What the job printed, from character ``offset``: all of it once it ended; while it runs, what its
        node has sent so far (every second or so)."""
        query = {"offset": offset} if offset else None
        return _parse(JobOutput, await self._call("GET", f"/v1/jobs/{_segment(job_id)}/output", params=query))

    async def job_files(self, job_id: str) -> JobFiles:
        """The files the job gave back of its spec's ``outputs`` (as its last attempt that ended left them)."""
        return _parse(JobFiles, await self._call("GET", f"/v1/jobs/{_segment(job_id)}/files"))

    async def job_file(self, job_id: str, path: str) -> bytes:
        """One file the job gave back, its bytes (its first ones alone if ``job_files`` says ``truncated``)."""
        quoted = "/".join(_segment(name) for name in path.split("/"))
        return (await self._call("GET", f"/v1/jobs/{_segment(job_id)}/files/{quoted}")).content

    async def follow_output(self, job_id: str, *, poll_s: float = 1.0) -> AsyncGenerator[JobOutput, None]:
        """What the job prints, as it comes, until it has ended: each item's ``output`` is what is new since
        the one before. An item whose ``attempt`` differs from the one before starts that attempt's output
        from its beginning (the job is being retried)."""
        attempt: int | None = None
        offset = 0
        while True:
            piece = await self.job_output(job_id, offset=offset)
            if piece.attempt != attempt and offset:
                piece = await self.job_output(job_id)  # a new attempt: its output from its start
            attempt, offset = piece.attempt, piece.length
            if piece.output or piece.ended:
                yield piece
            if piece.ended:
                return
            await asyncio.sleep(poll_s)

    async def explain_job(self, job_id: str) -> Explanation:
        """The scheduler's last decision about the job: what ruled nodes out, and how the rest scored."""
        return _parse(Explanation, await self._call("GET", f"/v1/jobs/{_segment(job_id)}/explain"))

    async def wait_job(self, job_id: str, *, poll_s: float = 0.5, timeout: float | None = None) -> Job:
        """Poll until the job has ended (see ``Job.ended``); ``TimeoutError`` after ``timeout`` seconds.

        Polling rather than ``job_updates``: it needs no WebSocket through proxies, and a missed update
        cannot leave it waiting forever.
        """
        async with asyncio.timeout(timeout):
            while not (job := await self.get_job(job_id)).ended:
                await asyncio.sleep(poll_s)
        return job

    async def job_updates(self) -> AsyncGenerator[Job, None]:
        """Each change to your jobs as it happens, until the gateway closes the connection.

        A refusal, whether of the handshake (HTTP 401/403) or right after it (close code 4401/4403),
        raises ``ApiError``, after one refresh of the session as with the other calls. An unreachable
        gateway raises ``OSError`` or ``TimeoutError``; a dropped connection
        ``websockets.exceptions.ConnectionClosedError``. Nothing is replayed: after reconnecting, read
        the jobs again (``list_jobs``) for what changed meanwhile. Stopping early: close the iterator
        (``contextlib.aclosing``) so that the connection is closed at once.
        """
        refreshed = False
        while True:
            sent = self.access_token
            try:
                async with contextlib.aclosing(self._job_updates_once()) as updates:
                    async for job in updates:
                        yield job
                return
            except ApiError as exc:
                if refreshed or exc.status != 401 or not await self._refreshed_after_401(sent):
                    raise
                refreshed = True  # once only, as in ``_call``

    async def jwks(self) -> dict[str, Any]:
        """The public signing keys (``{"keys": [...]}``), for verifying access tokens locally."""
        document: dict[str, Any] = (await self._call("GET", "/.well-known/jwks.json", auth=False)).json()
        return document

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        params: Query | None = None,
        timeout: float | None = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """One call; ``timeout`` replaces the client's for calls known to take long; ``raw`` is sent
        as the body instead of ``body``'s JSON (file chunks). ``idempotent`` says whether doing it twice
        does no harm (by default: by its method), which decides what is tried again (``fog_client.retries``)."""
        sent = self.access_token
        again = method in retries_.IDEMPOTENT_METHODS if idempotent is None else idempotent

        async def send() -> httpx.Response:
            return await self._send_with_retries(
                method, path, body, auth=auth, params=params, timeout=timeout, raw=raw, headers=headers,
                idempotent=again,
            )  # fmt: skip

        response = await send()
        if response.status_code == 401 and auth and await self._refreshed_after_401(sent):
            response = await send()  # once only: a second 401 is the answer
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    async def _send_with_retries(self, *args: Any, idempotent: bool, **kwargs: Any) -> httpx.Response:
        """``_send``, tried again after a failure on the way, up to ``retries`` times (``fog_client.retries``)."""
        for retry in itertools.count():
            try:
                response = await self._send(*args, **kwargs)
            except httpx.TransportError as exc:
                if retry >= self.retries or not retries_.error_worth_another_try(exc, idempotent=idempotent):
                    raise
                await asyncio.sleep(retries_.pause_before(retry, None) or 0.0)
                continue
            if retry >= self.retries or not retries_.worth_another_try(response.status_code, idempotent=idempotent):
                return response
            pause = retries_.pause_before(retry, parse_retry_after(response.headers.get("Retry-After")))
            if pause is None:
                return response
            await asyncio.sleep(pause)
        raise AssertionError("the loop returns or raises")

    async def _refreshed_after_401(self, sent: str | None) -> bool:
        """After a 401 to the access token ``sent``: whether there is a new one to try (refreshing if need be)."""
        if self.api_key is not None or self.refresh_token is None:  # a refused key is not the session's business
            return False
        async with self._refreshing:
            if self.access_token == sent and self.refresh_token is not None:  # nobody refreshed meanwhile
                await self.refresh()
        return self.access_token != sent

    async def _send(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        auth: bool,
        params: Query | None,
        timeout: float | None = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        credential = (self.api_key or self.access_token) if auth else None
        sent_headers = dict(headers or {})
        if credential:
            sent_headers["Authorization"] = f"Bearer {credential}"
        wait = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        if raw is not None:
            return await self._http.request(
                method, path, content=raw, headers=sent_headers, params=params, timeout=wait
            )
        return await self._http.request(
            method, path, json=body, headers=sent_headers or None, params=params, timeout=wait
        )

    async def _job_updates_once(self) -> AsyncGenerator[Job, None]:
        async with await self._handshake(JOB_UPDATES_PATH) as websocket:
            try:
                async for message in websocket:
                    job = _job_update(message)
                    if job is not None:
                        yield job
            except ConnectionClosed as exc:
                # The gateway checks the bearer after accepting the socket: its refusal is a close code.
                refusal = _closing_refusal(exc)
                if refusal is None:
                    raise
                raise refusal from None

    async def _handshake(self, path: str) -> ClientConnection:
        headers = {}
        if request_id := self._http.headers.get("X-Request-ID"):
            headers["X-Request-ID"] = request_id
        if credential := self.api_key or self.access_token:
            headers["Authorization"] = f"Bearer {credential}"
        try:
            return await connect(
                _websocket_url(self.base_url, path),
                additional_headers=headers,
                open_timeout=self._timeout,
                max_size=MAX_MESSAGE_BYTES,
                logger=_websocket_log,
            )
        except InvalidStatus as exc:
            raise _handshake_error(exc.response) from None

    def _keep(self, tokens: Tokens) -> None:
        self.access_token, self.refresh_token = tokens.access_token, tokens.refresh_token
        if self.on_tokens is not None:
            self.on_tokens(tokens)


def _parse(model: type[M], response: httpx.Response) -> M:
    return model.model_validate_json(response.content)


def _capabilities_body(capabilities: Capabilities) -> dict[str, Any]:
    body: dict[str, Any] = capabilities.model_dump(mode="json")
    if body["networks"] == ["host"]:  # the default, left out: a gateway from before the field refuses it
        del body["networks"]
    return body


def _spec_body(spec: JobSpec) -> dict[str, Any]:
    # Unset optional fields are left out rather than sent as null: the gateway's spec is strict. So are files and
    # outputs (and after) when there are none, and a disk of 0: a gateway older than them refuses the fields.
    body: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    for newer in ("files", "outputs", "after", "after_any"):
        if not body.get(newer):
            body.pop(newer, None)
    if not body.get("resources", {}).get("disk_bytes"):
        body.get("resources", {}).pop("disk_bytes", None)
    return body


def _job_update(message: str | bytes) -> Job | None:
    """The job in an update message; ``None`` for a message of another type (a newer gateway may add some)."""
    update = json.loads(message)
    if not isinstance(update, dict) or update.get("type") != "job":
        return None
    return Job.model_validate(update["job"])


def _websocket_url(base_url: str, path: str) -> str:
    """``http(s)://host[/prefix]`` → ``ws(s)://host[/prefix]<path>``: a gateway behind a path keeps it."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"not an http(s) gateway URL: {base_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def _closing_refusal(closed: ConnectionClosed) -> ApiError | None:
    """A close with 4401 or 4403 (the HTTP status plus 4000) is a refusal like a 401 or 403 reply."""
    frame = closed.rcvd
    if frame is None or frame.code not in _REFUSING_CLOSE_CODES:
        return None
    status = frame.code - 4000
    return ApiError(status, HTTPStatus(status).phrase, frame.reason)


def _handshake_error(response: HandshakeResponse) -> ApiError:
    """A refused WebSocket handshake, read like any other refusal (problem details, Retry-After)."""
    headers = list(response.headers.raw_items())
    return ApiError.from_response(httpx.Response(response.status_code, headers=headers, content=bytes(response.body)))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
