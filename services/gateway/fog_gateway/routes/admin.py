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
    ) -> dict[str, Any]:
        """Every account, oldest first."""
        return await calls.ask(contract.USER_LIST, contract.ListUsersQuery(limit=limit, offset=offset))

    @router.put("/users/{user_id}/roles", response_model=contract.UserView, responses=documented(404, 409))
    async def set_roles(user_id: UserId, body: contract.SetRolesRequest, admin: Admin) -> dict[str, Any]:
        """Replace a user's roles; their sessions end, so new tokens carry the new roles."""
        command = contract.SetRolesCommand(user_id=user_id, roles=body.roles, by=_by(admin))
        return await calls.ask(contract.USER_SET_ROLES, command)

    @router.post("/users/{user_id}/disable", response_model=contract.UserView, responses=documented(404, 409))
    async def disable_user(user_id: UserId, admin: Admin) -> dict[str, Any]:
        """Disable an account: its sessions, API keys and node credentials stop working."""
        return await calls.ask(contract.USER_DISABLE, contract.DisableUserCommand(user_id=user_id, by=_by(admin)))

    @router.post("/signing-keys/rotate", response_model=contract.RotatedKey)
    async def rotate_signing_key(_: Admin) -> dict[str, Any]:
        """Sign new tokens with a fresh key; tokens signed with the old one verify until they expire."""
        return await calls.ask(contract.SIGNING_KEY_ROTATE, {})

    return router


def _by(admin: Principal) -> str:
    return admin.user_id or "unknown"
