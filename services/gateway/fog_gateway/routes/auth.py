"""``/v1/auth/*``, ``/v1/me`` and ``/.well-known/jwks.json``: accounts and sessions over HTTP."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.nats import NatsBroker
from pydantic import BaseModel

from fog_gateway.problems import Problem
from fog_gateway.security import Verifier
from fog_shared.bus.rpc import request
from fog_shared.commands import auth as contract
from fog_shared.tokens import AccessClaims, TokenError

#: auth's refusal codes → HTTP statuses
STATUS = {
    "weak_password": 422, "invalid_role": 422, "email_taken": 409, "invalid_credentials": 401,
    "invalid_grant": 401, "account_disabled": 403, "locked": 429,
}  # fmt: skip


class Me(BaseModel):
    user_id: str
    roles: list[str]
    session_id: str | None


def build_router(broker: NatsBroker, verifier: Verifier, timeout_s: float) -> APIRouter:
    router = APIRouter()
    bearer = HTTPBearer(auto_error=False)

    async def principal(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> AccessClaims:
        if credentials is None:
            raise Problem(401, "Unauthorized", "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        try:
            return await verifier.verify(credentials.credentials)
        except TokenError as exc:
            raise Problem(
                401, "Unauthorized", exc.reason, code="invalid_token", headers={"WWW-Authenticate": "Bearer"}
            ) from None

    async def ask(subject: str, body: BaseModel) -> dict[str, Any]:
        reply = await request(broker, subject, body, timeout=timeout_s)
        if "error" in reply:
            refusal = contract.ErrorReply.model_validate(reply["error"])
            headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else None
            raise Problem(
                STATUS.get(refusal.code, 400),
                refusal.code.replace("_", " "),
                refusal.detail,
                code=refusal.code,
                headers=headers,
            )
        return reply

    @router.post("/v1/auth/register", status_code=201, response_model=contract.RegisteredReply, tags=["auth"])
    async def register(body: contract.RegisterRequest) -> dict[str, Any]:
        return await ask(contract.REGISTER, body)

    @router.post("/v1/auth/login", response_model=contract.TokenReply, tags=["auth"])
    async def login(body: contract.RegisterRequest, http: Request) -> dict[str, Any]:
        source = http.client.host if http.client else "unknown"
        return await ask(contract.LOGIN, contract.LoginRequest(email=body.email, password=body.password, source=source))

    @router.post("/v1/auth/refresh", response_model=contract.TokenReply, tags=["auth"])
    async def refresh(body: contract.RefreshRequest) -> dict[str, Any]:
        return await ask(contract.REFRESH, body)

    @router.post("/v1/auth/logout", status_code=204, tags=["auth"])
    async def logout(body: contract.RefreshRequest) -> None:
        await ask(contract.LOGOUT, body)

    @router.get("/v1/me", response_model=Me, tags=["auth"])
    async def me(claims: Annotated[AccessClaims, Depends(principal)]) -> Me:
        return Me(user_id=claims.subject, roles=list(claims.roles), session_id=claims.session_id)

    @router.get("/.well-known/jwks.json", tags=["auth"])
    async def jwks() -> dict[str, Any]:
        return await request(broker, contract.JWKS, {}, timeout=timeout_s)

    return router
