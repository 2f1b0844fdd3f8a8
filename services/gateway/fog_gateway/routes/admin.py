"""``/v1/admin/*``: accounts and signing keys, for the ``admin`` role only."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import auth as contract

UserId = Annotated[str, Path(max_length=64)]


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, prefix="/v1/admin", tags=["admin"], responses=GUARDED_ERRORS)
    Admin = Annotated[Principal, Depends(authz.allow(PEOPLE, roles=("admin",)))]

    @router.get("/users", response_model=contract.UserList)
    async def list_users(
        _: Admin,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        email: Annotated[str | None, Query(min_length=1, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$")] = None,
    ) -> dict[str, Any]:
        """Every account, oldest first; or the one with ``email`` (compared case-insensitively)."""
        return await calls.ask(contract.USER_LIST, contract.ListUsersQuery(limit=limit, offset=offset, email=email))

    @router.put("/users/{user_id}/roles", response_model=contract.UserView, responses=documented(404, 409))
    async def set_roles(user_id: UserId, body: contract.SetRolesRequest, admin: Admin) -> dict[str, Any]:
        """Replace a user's roles; their sessions end, so new tokens carry the new roles."""
        command = contract.SetRolesCommand(user_id=user_id, roles=body.roles, by=_by(admin))
        return await calls.ask(contract.USER_SET_ROLES, command)

    @router.post("/users/{user_id}/disable", response_model=contract.UserView, responses=documented(404, 409))
    async def disable_user(user_id: UserId, admin: Admin) -> dict[str, Any]:
        """Disable an account: its sessions, API keys and node credentials stop working."""
        return await calls.ask(contract.USER_DISABLE, contract.DisableUserCommand(user_id=user_id, by=_by(admin)))

    @router.get("/users/{user_id}", response_model=contract.UserView, responses=documented(404))
    async def get_user(user_id: UserId, _: Admin) -> dict[str, Any]:
        """One account: roles, whether disabled or locked out (and until when), last login, last password change."""
        return await calls.ask(contract.USER_GET, contract.UserQuery(user_id=user_id))

    @router.post("/users/{user_id}/unlock", response_model=contract.UserView, responses=documented(404))
    async def unlock_user(user_id: UserId, admin: Admin) -> dict[str, Any]:
        """End the account's lockout after too many wrong passwords: it may log in again at once."""
        return await calls.ask(contract.USER_UNLOCK, contract.UnlockUserCommand(user_id=user_id, by=_by(admin)))

    @router.post("/users/{user_id}/enable", response_model=contract.UserView, responses=documented(404))
    async def enable_user(user_id: UserId, admin: Admin) -> dict[str, Any]:
        """Enable a disabled account: it may log in again, and its API keys and node credentials that were
        not revoked work again."""
        return await calls.ask(contract.USER_ENABLE, contract.EnableUserCommand(user_id=user_id, by=_by(admin)))

    @router.post(
        "/users/{user_id}/password-reset", response_model=contract.IssuedPasswordReset, responses=documented(404)
    )
    async def issue_password_reset(
        user_id: UserId, admin: Admin, body: contract.PasswordResetIssueRequest | None = None
    ) -> dict[str, Any]:
        """A one-time token the user sets a new password with (``POST /v1/auth/password-reset``), shown
        once; it replaces any earlier unused one. Hand it over yourself: Fog sends no mail."""
        expires_in_s = (body or contract.PasswordResetIssueRequest()).expires_in_s
        command = contract.PasswordResetIssueCommand(user_id=user_id, by=_by(admin), expires_in_s=expires_in_s)
        return await calls.ask(contract.PASSWORD_RESET_ISSUE, command)

    @router.post("/signing-keys/rotate", response_model=contract.RotatedKey)
    async def rotate_signing_key(_: Admin) -> dict[str, Any]:
        """Sign new tokens with a fresh key; tokens signed with the old one verify until they expire."""
        return await calls.ask(contract.SIGNING_KEY_ROTATE, {})

    return router


def _by(admin: Principal) -> str:
    return admin.user_id or "unknown"
