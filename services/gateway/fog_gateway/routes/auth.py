"""``/v1/auth/*``, ``/v1/me`` and ``/.well-known/jwks.json``: accounts and sessions over HTTP."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from fog_gateway.authz import NODES, PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import auth as contract


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, tags=["auth"])
    anyone_signed_in = authz.allow((*PEOPLE, *NODES))

    @router.post(
        "/v1/auth/register", status_code=201, response_model=contract.RegisteredReply, responses=documented(409)
    )
    async def register(body: contract.RegisterRequest) -> dict[str, Any]:
        """Create an account (roles ``user``, and ``provider`` for node owners)."""
        return await calls.ask(contract.REGISTER, body)

    @router.post("/v1/auth/login", response_model=contract.TokenReply, responses=documented(401, 403))
    async def login(body: contract.Credentials, http: Request) -> dict[str, Any]:
        """Exchange e-mail and password for an access token and a refresh token."""
        source = http.client.host if http.client else "unknown"
        request = contract.LoginRequest(email=body.email, password=body.password, source=source)
        return await calls.ask(contract.LOGIN, request)

    @router.post("/v1/auth/refresh", response_model=contract.TokenReply, responses=documented(401))
    async def refresh(body: contract.RefreshRequest) -> dict[str, Any]:
        """Spend a refresh token (single use) for a new pair."""
        return await calls.ask(contract.REFRESH, body)

    @router.post("/v1/auth/logout", status_code=204)
    async def logout(body: contract.RefreshRequest) -> None:
        """End the session the refresh token belongs to; its access tokens stop working too."""
        await calls.ask(contract.LOGOUT, body)

    @router.get("/v1/me", response_model=contract.Principal, responses=GUARDED_ERRORS)
    async def me(principal: Annotated[Principal, Depends(anyone_signed_in)]) -> Principal:
        """Who the credential on this request stands for."""
        return principal

    @router.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        """The public keys access tokens are signed with (RFC 7517)."""
        return await calls.ask(contract.JWKS, {})

    return router
