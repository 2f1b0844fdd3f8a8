"""Who is asking: access tokens verified locally, API keys and node credentials via auth, cached.

Access tokens (JWTs) are verified against auth's JWKS, fetched at start, again on every
``signing_key.rotated`` event, and when a token names a key we do not know: such refreshes are
shared by every request waiting on one and spaced at least ``unknown_kid_refresh_s`` apart, so
tokens with made-up ``kid`` values cost auth one JWKS query per interval, however many arrive,
while a token signed right after a rotation (before its event got here) waits for the refresh
instead of failing. Revoked sessions come from ``session.revoked`` events: the last
access-token lifetime of them is replayed from the stream at start (older sessions' tokens have
expired anyway), then followed live, so a revocation reaches every gateway process within moments.

A verified token's claims are kept until it expires (bounded, least recently used out first), so
a client's every request does not check the same signature again; the revocation check still
runs on every request, and new signing keys drop what was kept.

API keys and node credentials are opaque: auth says whom they stand for (``introspect``), and the
answer is cached for ``credential_cache_s`` at most. Revocation, disabling and role-change events
evict cached answers at once, so the cache never outlives a revocation by more than the event's
trip through JetStream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from fog_gateway.tolerant import read
from fog_shared.bus.rpc import request
from fog_shared.commands import auth as contract
from fog_shared.commands.common import refusal_in
from fog_shared.events.auth import (
    ApiKeyRevoked,
    NodeCredentialRevoked,
    SessionRevoked,
    SigningKeyRotated,
    UserDisabled,
    UserRolesChanged,
)
from fog_shared.events.base import Event
from fog_shared.replay.history import Query, history, parse_cursor
from fog_shared.subjects import service_events
from fog_shared.tokens import AccessClaims, KeySet, TokenError, UnknownKey, verify_access_token

log = logging.getLogger(__name__)

Principal = contract.Principal
V = TypeVar("V")


class CredentialRefused(TokenError):
    """Auth answered: this API key or node credential is not (or no longer) valid."""


@dataclass(frozen=True, slots=True)
class _Cached(Generic[V]):
    value: V
    valid_until: float  # by the cache's clock


class ExpiringCache(Generic[V]):
    """Values by SHA-256 of a secret, each until its own time, bounded, least recently used out first."""

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries, self.clock = max_entries, clock
        self._entries: OrderedDict[bytes, _Cached[V]] = OrderedDict()

    def get(self, digest: bytes) -> V | None:
        cached = self._entries.get(digest)
        if cached is None or cached.valid_until <= self.clock():
            self._entries.pop(digest, None)
            return None
        self._entries.move_to_end(digest)
        return cached.value

    def keep(self, digest: bytes, value: V, valid_until: float) -> None:
        if valid_until <= self.clock():
            return
        self._entries[digest] = _Cached(value, valid_until)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def evict(self, matches: Callable[[V], bool]) -> int:
        doomed = [digest for digest, cached in self._entries.items() if matches(cached.value)]
        for digest in doomed:
            del self._entries[digest]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()


class CredentialCache(ExpiringCache[Principal]):
    """Introspection answers, for ``ttl_s`` at most and never past the credential's expiry."""

    def __init__(self, *, ttl_s: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_entries=max_entries, clock=clock)
        self.ttl_s = ttl_s

    def put(self, digest: bytes, principal: Principal, expires_at: datetime | None) -> None:
        ttl = self.ttl_s
        if expires_at is not None:
            ttl = min(ttl, (expires_at - datetime.now(UTC)).total_seconds())
        self.keep(digest, principal, self.clock() + ttl)


class VerifiedTokens(ExpiringCache[AccessClaims]):
    """Claims of access tokens already verified, until the tokens expire (``clock`` is wall time)."""

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        super().__init__(max_entries=max_entries, clock=clock)

    def put(self, digest: bytes, claims: AccessClaims) -> None:
        self.keep(digest, claims, claims.expires_at)


def _evicts(event: Event) -> Callable[[Principal], bool] | None:
    """Which cached principals an auth event makes stale, if any."""
    match event:
        case ApiKeyRevoked():
            return lambda p: p.api_key_id == event.api_key_id
        case NodeCredentialRevoked():
            return lambda p: p.node_id == event.node_id
        case UserDisabled() | UserRolesChanged():
            # A disabled provider's nodes stop too; auth refuses them on the next introspection.
            return lambda p: p.user_id == event.user_id or p.kind == "node"
    return None


class Verifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        access_ttl_s: int,
        timeout_s: float,
        credential_cache_s: float = 30.0,
        unknown_kid_refresh_s: float = 1.0,
    ) -> None:
        self.issuer, self.audience, self.access_ttl_s, self.timeout_s = issuer, audience, access_ttl_s, timeout_s
        self.unknown_kid_refresh_s = unknown_kid_refresh_s
        self.keys = KeySet({})
        self.revoked_sessions: set[str] = set()
        self.credentials = CredentialCache(ttl_s=credential_cache_s)
        self.verified = VerifiedTokens()
        #: told (node id, credential id) when a node credential is revoked: open connections close
        self.on_node_revoked: list[Callable[[str, str], Awaitable[None]]] = []
        self._last_refresh = 0.0
        self._unknown_kid_refresh: asyncio.Task[None] | None = None
        self._broker: NatsBroker | None = None

    async def start(self, broker: NatsBroker, js: JetStreamContext) -> None:
        self._broker = broker
        # New revocations as they come, then those made while no token they end can have expired yet,
        # read once (the overlap is harmless). Not one consumer started at a time: nats-py recreates an
        # ordered consumer that lost its place (a NATS restart) with a start sequence and the start
        # time both, which the server refuses, and the gateway heard no revocation again.
        await js.subscribe(
            SessionRevoked.TYPE.subject, cb=self._on_revoked, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        await self._read_recent_revocations(js)
        await js.subscribe(
            service_events("auth"), cb=self._on_auth_event, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        try:
            await self.refresh_keys()
        except Exception:
            # Auth may start after us: the first token with an unknown kid fetches the keys.
            log.warning("JWKS not available yet", exc_info=True)

    async def refresh_keys(self) -> None:
        self._last_refresh = time.monotonic()
        self.keys = KeySet.from_jwks(await request(self._bus(), contract.JWKS, {}, timeout=self.timeout_s))
        self.verified.clear()  # a key withdrawn no longer vouches for what it signed

    def _bus(self) -> NatsBroker:
        if self._broker is None:
            raise RuntimeError("the verifier is not started")
        return self._broker

    async def _on_revoked(self, msg: Msg) -> None:
        try:
            self.revoked_sessions.add(SessionRevoked.from_json(msg.data).session_id)
        except Exception:
            log.warning("unreadable session.revoked event", exc_info=True)

    async def _read_recent_revocations(self, js: JetStreamContext) -> None:
        since = datetime.now(UTC) - timedelta(seconds=self.access_ttl_s + 60)
        query = Query(subject=SessionRevoked.TYPE.subject, since=since, limit=1000)
        while True:
            page = await history(js, query)
            for record in page.items:
                try:
                    self.revoked_sessions.add(SessionRevoked.model_validate(record.data).session_id)
                except ValueError:
                    log.warning("unreadable session.revoked event", extra={"seq": record.seq})
            if not page.more:
                return
            query = replace(query, cursor=parse_cursor(page.cursor))

    async def _on_auth_event(self, msg: Msg) -> None:
        try:
            if msg.subject == SigningKeyRotated.TYPE.subject:
                await self.refresh_keys()
                return
            for event_type in (ApiKeyRevoked, NodeCredentialRevoked, UserDisabled, UserRolesChanged):
                if msg.subject == event_type.TYPE.subject:
                    event = event_type.from_json(msg.data)
                    matches = _evicts(event)
                    if matches is not None:
                        self.credentials.evict(matches)
                    if isinstance(event, NodeCredentialRevoked):
                        for listener in self.on_node_revoked:
                            await listener(event.node_id, event.credential_id)
        except Exception:
            log.warning("auth event not applied", exc_info=True, extra={"subject": msg.subject})

    # -- verification -------------------------------------------------------------------
    async def principal(self, credential: str) -> Principal:
        """Whoever ``credential`` (access token, API key or node credential) stands for."""
        if credential.startswith((contract.API_KEY_PREFIX, contract.NODE_CREDENTIAL_PREFIX)):
            return await self._introspect(credential)
        claims = await self.verify(credential)
        return Principal(kind="user", user_id=claims.subject, roles=list(claims.roles), session_id=claims.session_id)

    async def verify(self, token: str) -> AccessClaims:
        digest = hashlib.sha256(token.encode()).digest()
        claims = self.verified.get(digest)
        if claims is None:
            try:
                claims = self._verify(token)
            except UnknownKey:
                await self._refresh_for_unknown_kid()
                claims = self._verify(token)
            self.verified.put(digest, claims)
        if claims.session_id is not None and claims.session_id in self.revoked_sessions:
            raise TokenError("session revoked")
        return claims

    async def _refresh_for_unknown_kid(self) -> None:
        if self._unknown_kid_refresh is None or self._unknown_kid_refresh.done():
            self._unknown_kid_refresh = asyncio.create_task(self._spaced_refresh())
        await asyncio.shield(self._unknown_kid_refresh)

    async def _spaced_refresh(self) -> None:
        wait = self._last_refresh + self.unknown_kid_refresh_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # spacing refreshes, not synchronising anything
        await self.refresh_keys()

    def _verify(self, token: str) -> AccessClaims:
        return verify_access_token(token, self.keys, issuer=self.issuer, audience=self.audience)

    async def _introspect(self, credential: str) -> Principal:
        digest = hashlib.sha256(credential.encode()).digest()
        cached = self.credentials.get(digest)
        if cached is not None:
            return cached
        if len(credential) > 256:
            raise CredentialRefused("credential too long")
        body = contract.IntrospectRequest(credential=credential)
        reply = await request(self._bus(), contract.INTROSPECT, body, timeout=self.timeout_s)
        refusal = refusal_in(reply)
        if refusal is not None:
            raise CredentialRefused(refusal.detail)
        answer = read(contract.IntrospectReply, reply)
        self.credentials.put(digest, answer.principal, answer.expires_at)
        return answer.principal
