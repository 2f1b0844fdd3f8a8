"""The key directory: devices' identity keys and one-time prekeys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

#: a device's keys as the directory hands them out
DEVICE_COLUMNS = "identity_key, signing_key, signed_prekey_id, signed_prekey, signed_prekey_signature"


async def device(conn: asyncpg.Connection, user_id: str, device_id: str) -> asyncpg.Record | None:
    """The device's keys (``DEVICE_COLUMNS``), its row locked to the end of the transaction."""
    return await conn.fetchrow(
        f"SELECT {DEVICE_COLUMNS} FROM device_keys WHERE user_id = $1 AND device_id = $2 FOR UPDATE",
        user_id,
        device_id,
    )


async def put_device(
    conn: asyncpg.Connection,
    user_id: str,
    device_id: str,
    identity_key: str,
    *,
    signing_key: str | None,
    signed_prekey: tuple[int, str, str] | None,
    replace: bool,
    now: datetime,
) -> None:
    """Record the device's identity key, and its signing key and signed prekey (key id, public key, signature) if
    given (the device's are kept if not); ``replace`` drops what belonged to its old identity."""
    if replace:
        await conn.execute("DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2", user_id, device_id)
    key_id, public_key, signature = signed_prekey or (None, None, None)
    await conn.execute(
        "INSERT INTO device_keys (user_id, device_id, identity_key, updated_at,"
        " signing_key, signed_prekey_id, signed_prekey, signed_prekey_signature)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET updated_at = EXCLUDED.updated_at,"
        " signing_key = coalesce(EXCLUDED.signing_key, device_keys.signing_key),"
        " signed_prekey_id = coalesce(EXCLUDED.signed_prekey_id, device_keys.signed_prekey_id),"
        " signed_prekey = coalesce(EXCLUDED.signed_prekey, device_keys.signed_prekey),"
        " signed_prekey_signature = coalesce(EXCLUDED.signed_prekey_signature, device_keys.signed_prekey_signature)",
        user_id,
        device_id,
        identity_key,
        now,
        signing_key,
        key_id,
        public_key,
        signature,
    )


async def add_prekeys(
    conn: asyncpg.Connection, user_id: str, device_id: str, prekeys: Sequence[tuple[int, str]]
) -> None:
    """Add one-time prekeys; a key id the device already used (claimed or not) is kept as it was."""
    await conn.executemany(
        "INSERT INTO prekeys (user_id, device_id, key_id, public_key) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
        [(user_id, device_id, key_id, public_key) for key_id, public_key in prekeys],
    )


async def devices(conn: asyncpg.Connection, user_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT d.device_id, {', '.join('d.' + c for c in DEVICE_COLUMNS.split(', '))}, d.updated_at,"
        " (SELECT count(*) FROM prekeys p WHERE p.user_id = d.user_id AND p.device_id = d.device_id"
        "  AND p.claimed_at IS NULL) AS prekeys_left"
        " FROM device_keys d WHERE d.user_id = $1 ORDER BY d.device_id",
        user_id,
    )
    return rows


async def claim_prekey(
    conn: asyncpg.Connection, user_id: str, device_id: str, claimed_by: str, now: datetime
) -> asyncpg.Record | None:
    """Hand out the device's lowest unclaimed prekey, to this claimer only: concurrent claims skip
    each other's row (SKIP LOCKED) instead of sharing it."""
    return await conn.fetchrow(
        "UPDATE prekeys SET claimed_by = $3, claimed_at = $4 WHERE (user_id, device_id, key_id) = ("
        "  SELECT user_id, device_id, key_id FROM prekeys WHERE user_id = $1 AND device_id = $2"
        "  AND claimed_at IS NULL ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING key_id, public_key",
        user_id,
        device_id,
        claimed_by,
        now,
    )
