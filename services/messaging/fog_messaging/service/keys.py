"""The key directory: devices publish their public keys; senders claim one-time prekeys.

The service never sees a private key or a plaintext: message bodies may be ciphertext made with
these keys, which the service stores and forwards like any text.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from fog_messaging import domain, store
from fog_messaging.service.common import MessagingError, member_of
from fog_shared.commands import messaging as contract
from fog_shared.commands.auth import Principal


def _person(by: Principal) -> str:
    me = member_of(by)
    if domain.is_node(me):
        raise MessagingError("forbidden", "nodes keep no keys in the directory")
    return me


async def publish(
    conn: asyncpg.Connection, command: contract.PublishKeysCommand, *, now: datetime
) -> contract.DeviceKeys:
    """Publish a device's identity key and prekeys (see :class:`contract.DeviceKeysUpload`)."""
    me, upload = _person(command.by), command.keys
    async with conn.transaction():
        current = await store.identity_key(conn, me, command.device_id)
        replace = domain.replaces_identity(current, upload.identity_key)
        await store.put_device(conn, me, command.device_id, upload.identity_key, replace=replace, now=now)
        await store.add_prekeys(conn, me, command.device_id, [(p.key_id, p.public_key) for p in upload.prekeys])
        mine = {r["device_id"]: r for r in await store.devices(conn, me)}
    return _device_view(mine[command.device_id])


async def user_keys(conn: asyncpg.Connection, query: contract.UserKeysQuery) -> contract.UserKeys:
    _person(query.by)
    return contract.UserKeys(
        user_id=query.user_id, devices=[_device_view(r) for r in await store.devices(conn, query.user_id)]
    )


async def claim(
    conn: asyncpg.Connection, command: contract.ClaimPrekeyCommand, *, now: datetime
) -> contract.ClaimedPrekey:
    """One of the device's prekeys, handed to this caller only; none left: the identity key alone."""
    me = _person(command.by)
    async with conn.transaction():
        identity = await store.identity_key(conn, command.user_id, command.device_id)
        if identity is None:
            raise MessagingError("not_found", "no such device")
        claimed = await store.claim_prekey(conn, command.user_id, command.device_id, me, now)
    prekey = contract.Prekey(key_id=claimed["key_id"], public_key=claimed["public_key"]) if claimed else None
    return contract.ClaimedPrekey(
        user_id=command.user_id, device_id=command.device_id, identity_key=identity, prekey=prekey
    )


def _device_view(row: asyncpg.Record) -> contract.DeviceKeys:
    return contract.DeviceKeys(
        device_id=row["device_id"], identity_key=row["identity_key"], prekeys_left=row["prekeys_left"],
        updated_at=row["updated_at"],
    )  # fmt: skip
