"""Who is asking: access tokens verified locally against auth's JWKS and a revocation list.

The JWKS is fetched at start, again on every ``signing_key.rotated`` event, and (at most once
per ``unknown_kid_refresh_s``) when a token names a key we do not know. Revoked sessions come
from ``session.revoked`` events: the last access-token lifetime of them is replayed from the
stream at start (older sessions' tokens have expired anyway), then followed live, so a
revocation reaches every gateway process within moments.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from fog_shared.bus.rpc import request
from fog_shared.commands import auth as auth_contract
from fog_shared.events.auth import SessionRevoked, SigningKeyRotated
from fog_shared.tokens import AccessClaims, KeySet, TokenError, UnknownKey, verify_access_token

log = logging.getLogger(__name__)


class Verifier:
    def __init__(
        self, *, issuer: str, audience: str, access_ttl_s: int, timeout_s: float, unknown_kid_refresh_s: float = 5.0
    ) -> None:
        self.issuer, self.audience, self.access_ttl_s, self.timeout_s = issuer, audience, access_ttl_s, timeout_s
        self.unknown_kid_refresh_s = unknown_kid_refresh_s
        self.keys = KeySet({})
        self.revoked_sessions: set[str] = set()
        self._last_refresh = 0.0
        self._broker: NatsBroker | None = None

    async def start(self, broker: NatsBroker, js: JetStreamContext) -> None:
        self._broker = broker
        since = datetime.now(UTC) - timedelta(seconds=self.access_ttl_s + 60)
        await js.subscribe(
            SessionRevoked.TYPE.subject, cb=self._on_revoked, ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_TIME, config=_start_at(since),
        )  # fmt: skip
        await js.subscribe(
            SigningKeyRotated.TYPE.subject, cb=self._on_rotated, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        try:
            await self.refresh_keys()
        except Exception:
            # Auth may start after us: the first token with an unknown kid fetches the keys.
            log.warning("JWKS not available yet", exc_info=True)

    async def refresh_keys(self) -> None:
        assert self._broker is not None
        self._last_refresh = time.monotonic()
        self.keys = KeySet.from_jwks(await request(self._broker, auth_contract.JWKS, {}, timeout=self.timeout_s))

    async def _on_revoked(self, msg: Msg) -> None:
        try:
            self.revoked_sessions.add(SessionRevoked.from_json(msg.data).session_id)
        except Exception:
            log.warning("unreadable session.revoked event", exc_info=True)

    async def _on_rotated(self, _: Msg) -> None:
        try:
            await self.refresh_keys()
        except Exception:
            log.warning("JWKS refresh after rotation failed", exc_info=True)

    async def verify(self, token: str) -> AccessClaims:
        try:
            claims = self._verify(token)
        except UnknownKey:
            if time.monotonic() - self._last_refresh < self.unknown_kid_refresh_s:
                raise
            await self.refresh_keys()
            claims = self._verify(token)
        if claims.session_id is not None and claims.session_id in self.revoked_sessions:
            raise TokenError("session revoked")
        return claims

    def _verify(self, token: str) -> AccessClaims:
        return verify_access_token(token, self.keys, issuer=self.issuer, audience=self.audience)


def _start_at(moment: datetime) -> ConsumerConfig:
    return ConsumerConfig(opt_start_time=moment)
