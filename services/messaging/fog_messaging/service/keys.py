"""The key directory: devices publish their public keys; senders claim one-time prekeys.

The service never sees a private key or a plaintext: message bodies may be ciphertext made with
these keys, which the service stores and forwards like any text.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected
from fog_messaging.service.common import MessagingError, member_of, refusal
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
    """Publish a device's identity key, signing key, signed prekey and one-time prekeys (see
    :class:`contract.DeviceKeysUpload`). A signed prekey whose signature is not its signing key's is refused."""
    me, upload, signed = _person(command.by), command.keys, command.keys.signed_prekey
    if signed is not None:
        assert upload.signing_key is not None  # the contract's rule
        try:
            domain.check_signed_prekey(upload.signing_key, signed.public_key, signed.signature)
        except Rejected as rejected:
            raise refusal(rejected) from None
    async with conn.transaction():
        current = await store.device(conn, me, command.device_id)
        replace = current is not None and (
            domain.replaces_identity(current["identity_key"], upload.identity_key)
            or domain.replaces_signing_key(current["signing_key"], upload.signing_key)
        )
        await store.put_device(
            conn, me, command.device_id, upload.identity_key, signing_key=upload.signing_key,
            signed_prekey=None if signed is None else (signed.key_id, signed.public_key, signed.signature),
            replace=replace, now=now,
        )  # fmt: skip
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
    """One of the device's one-time prekeys, handed to this caller only (none left: None), with the device's
    identity key, signing key and signed prekey, which every caller gets."""
    me = _person(command.by)
    async with conn.transaction():
        device = await store.device(conn, command.user_id, command.device_id)
        if device is None:
            raise MessagingError("not_found", "no such device")
        claimed = await store.claim_prekey(conn, command.user_id, command.device_id, me, now)
    prekey = contract.Prekey(key_id=claimed["key_id"], public_key=claimed["public_key"]) if claimed else None
    return contract.ClaimedPrekey(
        user_id=command.user_id, device_id=command.device_id, identity_key=device["identity_key"],
        signing_key=device["signing_key"], signed_prekey=_signed_prekey(device), prekey=prekey,
    )  # fmt: skip


def _device_view(row: asyncpg.Record) -> contract.DeviceKeys:
    return contract.DeviceKeys(
        device_id=row["device_id"], identity_key=row["identity_key"], signing_key=row["signing_key"],
        signed_prekey=_signed_prekey(row), prekeys_left=row["prekeys_left"], updated_at=row["updated_at"],
    )  # fmt: skip


def _signed_prekey(row: asyncpg.Record) -> contract.SignedPrekey | None:
    if row["signed_prekey"] is None:
        return None
    return contract.SignedPrekey(
        key_id=row["signed_prekey_id"], public_key=row["signed_prekey"], signature=row["signed_prekey_signature"]
    )
