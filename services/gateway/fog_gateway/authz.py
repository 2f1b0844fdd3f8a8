"""Authorization: every route states who may call it, and nothing passes by default.

A route takes ``Depends(guard.allow(...))`` naming the principal kinds and roles it admits; the
dependency authenticates (bearer token, API key or node credential), applies the per-principal
rate limit, then checks kind and roles. Public routes (register, login, …) are listed in
:data:`PUBLIC_ROUTES`, and a test fails when a route is neither guarded nor listed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from fog_gateway.problems import Problem
from fog_gateway.ratelimit import RATE_LIMITED, RateLimiter, retry_after_s
from fog_gateway.security import Principal, Verifier
from fog_shared.tokens import TokenError

#: routes anyone may call: (method, path)
PUBLIC_ROUTES = frozenset(
    {
        ("POST", "/v1/auth/register"), ("POST", "/v1/auth/login"), ("POST", "/v1/auth/refresh"),
        ("POST", "/v1/auth/logout"), ("POST", "/v1/auth/password-reset"), ("GET", "/.well-known/jwks.json"),
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/asyncapi.json"),
    }
)  # fmt: skip

USERS = ("user",)  # signed in with an access token
PEOPLE = ("user", "api_key")  # a user, directly or through one of their API keys
NODES = ("node",)

_bearer = HTTPBearer(auto_error=False, description="An access token, an API key or a node credential")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key or a node credential")

Guard = Callable[..., Awaitable[Principal]]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, code="unauthorized", headers={"WWW-Authenticate": "Bearer"})


class Authorizer:
    def __init__(self, verifier: Verifier, limiter: RateLimiter, clock: Callable[[], float] = time.monotonic) -> None:
        self.verifier, self.limiter, self.clock = verifier, limiter, clock

    async def authenticate(self, bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> Principal:
        credential = bearer.credentials if bearer is not None else api_key
        if not credential:
            raise _unauthorized("send an access token (Authorization: Bearer) or an API key (X-API-Key)")
        principal = await self.identify(credential)
        self.limit(principal)
        return principal

    async def identify(self, credential: str) -> Principal:
        try:
            return await self.verifier.principal(credential)
        except TokenError as exc:
            raise _unauthorized(exc.reason) from None

    def limit(self, principal: Principal) -> None:
        """The per-principal rate limit: :class:`Problem` 429 when exceeded."""
        key = f"node:{principal.node_id}" if principal.kind == "node" else f"user:{principal.user_id}"
        wait = self.limiter.take(key, self.clock())
        if wait > 0:
            RATE_LIMITED.labels(scope="principal").inc()
            raise Problem(
                429, "Too many requests", "slow down: this principal's request rate is limited",
                code="rate_limited", headers={"Retry-After": str(retry_after_s(wait))},
            )  # fmt: skip

    def allow(self, kinds: Iterable[str], roles: Iterable[str] = ()) -> Guard:
        """A dependency admitting principals of these ``kinds`` that hold any of ``roles`` (if given)."""
        kinds, roles = frozenset(kinds), frozenset(roles)

        async def guard(
            request: Request,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
            api_key: Annotated[str | None, Depends(_api_key)],
        ) -> Principal:
            principal = await self.authenticate(bearer, api_key)
            if principal.kind not in kinds:
                raise Problem(403, "Forbidden", f"a {principal.kind} cannot call this route", code="forbidden")
            if roles and not roles & set(principal.roles):
                raise Problem(
                    403, "Forbidden", f"this route needs the role {' or '.join(sorted(roles))}", code="forbidden"
                )
            request.state.principal = principal
            return principal

        guard.fog_guarded = True  # type: ignore[attr-defined]  # read by the default-deny test
        return guard
