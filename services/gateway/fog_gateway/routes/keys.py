"""``/v1/keys``: the key directory for end-to-end encrypted BitChat. Devices publish public keys
(an X25519 identity key, an Ed25519 signing key and a prekey signed with it, and one-time prekeys); a
sender fetches a user's devices and claims one one-time prekey per device, which nobody else gets."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import messaging as contract

DeviceIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
UserIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(
        route_class=RepliesReadTolerantly, prefix="/v1/keys", tags=["messaging"], responses=GUARDED_ERRORS
    )
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]

    @router.put("/devices/{device_id}", response_model=contract.DeviceKeys)
    async def publish_keys(device_id: DeviceIdPath, body: contract.DeviceKeysUpload, me: Person) -> dict[str, Any]:
        """Publish one of your devices' identity key, signing key and signed prekey, and one-time prekeys (more at
        any time; another signed prekey replaces the last). A signed prekey whose signature is not its signing
        key's is refused (422 ``invalid_signature``)."""
        command = contract.PublishKeysCommand(by=me, device_id=device_id, keys=body)
        return await calls.ask(contract.PUBLISH_KEYS, command)

    @router.get("/users/{user_id}", response_model=contract.UserKeys)
    async def user_keys(user_id: UserIdPath, me: Person) -> dict[str, Any]:
        """A user's devices: identity and signing keys, signed prekeys, and how many one-time prekeys each has left."""
        return await calls.ask(contract.USER_KEYS, contract.UserKeysQuery(by=me, user_id=user_id))

    @router.post(
        "/users/{user_id}/devices/{device_id}/claim", response_model=contract.ClaimedPrekey, responses=documented(404)
    )
    async def claim_prekey(user_id: UserIdPath, device_id: DeviceIdPath, me: Person) -> dict[str, Any]:
        """Take one of the device's one-time prekeys (``prekey`` null when none are left), with its signed prekey:
        check its signature with the signing key you trust for that device before you use it."""
        command = contract.ClaimPrekeyCommand(by=me, user_id=user_id, device_id=device_id)
        return await calls.ask(contract.CLAIM_PREKEY, command)

    return router
