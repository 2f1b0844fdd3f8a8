"""``/v1/auth/*``, ``/v1/me`` and ``/.well-known/jwks.json``: accounts and sessions over HTTP."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from fog_gateway.authz import NODES, PEOPLE, USERS, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, Problem, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import auth as contract


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, tags=["auth"])
    anyone_signed_in = authz.allow((*PEOPLE, *NODES))
    # A password or a session is the person's own business: an API key (a script's) or a node may not touch
    # either, so these routes take an access token alone.
    SignedIn = Annotated[Principal, Depends(authz.allow(USERS))]

    @router.post(
        "/v1/auth/register", status_code=201, response_model=contract.RegisteredReply, responses=documented(409)
    )
    async def register(body: contract.RegisterRequest) -> dict[str, Any]:
        """Create an account (roles ``user``, and ``provider`` for node owners)."""
        return await calls.ask(contract.REGISTER, body)

    @router.post("/v1/auth/login", response_model=contract.TokenReply, responses=documented(401, 403))
    async def login(body: contract.Credentials, http: Request) -> dict[str, Any]:
        """Exchange e-mail and password for an access token and a refresh token."""
        request = contract.LoginRequest(email=body.email, password=body.password, source=_source(http))
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

    @router.post("/v1/auth/password-reset", response_model=contract.SessionsEnded, responses=documented(400, 403, 422))
    async def reset_password(body: contract.PasswordResetRequest) -> dict[str, Any]:
        """Set a new password with the one-time token an admin issued; every session of the account ends."""
        return await calls.ask(contract.PASSWORD_RESET, body)

    @router.post("/v1/me/password", response_model=contract.SessionsEnded, responses={**GUARDED_ERRORS})
    async def change_password(
        body: contract.PasswordChangeRequest, principal: SignedIn, http: Request
    ) -> dict[str, Any]:
        """Change your password (the current one proves it is you; a wrong one counts as a failed login).
        This session stays signed in; every other one ends."""
        command = contract.PasswordChangeCommand(
            user_id=_user(principal), session_id=_session(principal),
            current_password=body.current_password, new_password=body.new_password, source=_source(http),
        )  # fmt: skip
        return await calls.ask(contract.PASSWORD_CHANGE, command)

    @router.get("/v1/me/sessions", response_model=contract.SessionList, responses=GUARDED_ERRORS)
    async def list_sessions(principal: SignedIn) -> dict[str, Any]:
        """Your sessions that can still be used (a login each, on some device or shell), the latest active
        first; the one asking is ``current``."""
        query = contract.SessionQuery(user_id=_user(principal), session_id=_session(principal))
        return await calls.ask(contract.SESSION_LIST, query)

    @router.delete("/v1/me/sessions/{session_id}", status_code=204, responses={**GUARDED_ERRORS, **documented(404)})
    async def end_session(session_id: Annotated[str, Path(max_length=64)], principal: SignedIn) -> None:
        """End one of your sessions: its tokens stop working (ending the current one is a logout)."""
        await calls.ask(
            contract.SESSION_END, contract.SessionEndCommand(user_id=_user(principal), session_id=session_id)
        )

    @router.post("/v1/me/sessions/end-others", response_model=contract.SessionsEnded, responses=GUARDED_ERRORS)
    async def end_other_sessions(principal: SignedIn) -> dict[str, Any]:
        """Sign out everywhere else: every session of yours but this one ends."""
        query = contract.SessionQuery(user_id=_user(principal), session_id=_session(principal))
        return await calls.ask(contract.SESSION_END_OTHERS, query)

    @router.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        """The public keys access tokens are signed with (RFC 7517)."""
        return await calls.ask(contract.JWKS, {})

    return router


def _user(principal: Principal) -> str:
    if principal.user_id is None:  # an access token names its user: never, short of a forged claim set
        raise Problem(403, "Forbidden", "this credential names no user", code="forbidden")
    return principal.user_id


def _session(principal: Principal) -> str:
    if principal.session_id is None:  # auth's tokens carry their session (sid); a token without one has none
        raise Problem(403, "Forbidden", "this token names no session", code="forbidden")
    return principal.session_id


def _source(http: Request) -> str:
    """The caller's address as this gateway sees it: what brute-force counting goes by."""
    return http.client.host if http.client else "unknown"
