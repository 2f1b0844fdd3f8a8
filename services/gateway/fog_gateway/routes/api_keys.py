"""``/v1/api-keys``: a signed-in user's long-lived keys for scripts and services."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from fog_gateway.authz import USERS, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import auth as contract

KeyId = Annotated[str, Path(max_length=64)]


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    # Keys are managed only from a signed-in session: a key cannot mint or revoke keys.
    router = APIRouter(
        route_class=RepliesReadTolerantly, prefix="/v1/api-keys", tags=["api keys"], responses=GUARDED_ERRORS
    )
    signed_in_user = authz.allow(USERS)
    User = Annotated[Principal, Depends(signed_in_user)]

    @router.post("", status_code=201, response_model=contract.CreatedApiKey)
    async def create_api_key(body: contract.ApiKeyCreateRequest, user: User) -> dict[str, Any]:
        """A new key with a scope within your roles; the secret is in this response only."""
        return await calls.ask(contract.API_KEY_CREATE, contract.ApiKeyCreateCommand(user_id=_id(user), key=body))

    @router.get("", response_model=contract.ApiKeyList)
    async def list_api_keys(user: User) -> dict[str, Any]:
        """Your keys, revoked ones included, with when each was last used (to the minute)."""
        return await calls.ask(contract.API_KEY_LIST, contract.UserQuery(user_id=_id(user)))

    @router.delete("/{key_id}", status_code=204, responses=documented(404))
    async def revoke_api_key(key_id: KeyId, user: User) -> None:
        """Revoke one of your keys; every gateway refuses it from then on."""
        await calls.ask(contract.API_KEY_REVOKE, contract.ApiKeyRevokeCommand(user_id=_id(user), api_key_id=key_id))

    return router


def _id(principal: Principal) -> str:
    assert principal.user_id is not None  # every user principal has one
    return principal.user_id
