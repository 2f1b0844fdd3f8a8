"""Auth use cases against a real PostgreSQL: sessions, rotation with reuse detection, lockout, keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import jwt
import pytest

from fog_auth import service
from fog_auth.passwords import Passwords
from fog_auth.service import AuthConfig, AuthError
from fog_shared.tokens import KeySet, TokenError, verify_access_token

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CONFIG = AuthConfig()
PASSWORD = "correct horse battery staple"


async def keys(conn: asyncpg.Connection, now: datetime = NOW) -> KeySet:
    return KeySet.from_jwks(await service.published_jwks(conn, CONFIG, now=now))


async def outbox_types(conn: asyncpg.Connection) -> list[str]:
    return [
        json.loads(r["h"])["ce-type"] for r in await conn.fetch("SELECT headers::text AS h FROM outbox ORDER BY id")
    ]


async def login(
    conn: asyncpg.Connection, passwords: Passwords, password: str = PASSWORD, at: datetime = NOW
) -> service.TokenPair:
    return await service.login(
        conn, passwords, CONFIG, email="Alice@Example.org", password=password, source="10.0.0.1", now=at
    )


async def test_register_login_refresh_logout(conn: asyncpg.Connection, passwords: Passwords) -> None:
    user_id = await service.register(
        conn, passwords, email="alice@example.org", password=PASSWORD, roles=["user"], now=NOW
    )
    first = await login(conn, passwords)
    claims = verify_access_token(
        first.access_token, await keys(conn), issuer=CONFIG.issuer, audience=CONFIG.audience, now=NOW.timestamp()
    )
    assert claims.subject == str(user_id)
    assert claims.roles == ("user",)
    assert claims.session_id == first.session_id

    second = await service.refresh(conn, CONFIG, refresh_token=first.refresh_token, now=NOW)
    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token

    await service.logout(conn, refresh_token=second.refresh_token, now=NOW)
    with pytest.raises(AuthError, match="not valid"):
        await service.refresh(conn, CONFIG, refresh_token=second.refresh_token, now=NOW)
    assert await outbox_types(conn) == [
        "auth.signing_key.rotated.v1",
        "auth.user.registered.v1",
        "auth.session.revoked.v1",
    ]


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(
    conn: asyncpg.Connection, passwords: Passwords
) -> None:
    await service.register(conn, passwords, email="alice@example.org", password=PASSWORD, roles=["user"], now=NOW)
    first = await login(conn, passwords)
    second = await service.refresh(conn, CONFIG, refresh_token=first.refresh_token, now=NOW)
    with pytest.raises(AuthError, match="already used"):
        await service.refresh(conn, CONFIG, refresh_token=first.refresh_token, now=NOW)
    # The newer token dies with its family, and verifiers are told through the event.
    with pytest.raises(AuthError, match="not valid"):
        await service.refresh(conn, CONFIG, refresh_token=second.refresh_token, now=NOW)
    revoked = await conn.fetchrow("SELECT revoked_reason FROM sessions WHERE id = $1::uuid", first.session_id)
    assert revoked["revoked_reason"] == "refresh_token_reuse"
    assert (await outbox_types(conn)).count("auth.session.revoked.v1") == 1


async def test_refresh_tokens_are_stored_only_as_hashes(conn: asyncpg.Connection, passwords: Passwords) -> None:
    await service.register(conn, passwords, email="alice@example.org", password=PASSWORD, roles=["user"], now=NOW)
    pair = await login(conn, passwords)
    stored = [bytes(r["token_hash"]) for r in await conn.fetch("SELECT token_hash FROM refresh_tokens")]
    assert stored == [service.hash_refresh_token(pair.refresh_token)]
    assert pair.refresh_token.encode() not in stored


async def test_the_nth_wrong_password_locks_the_account_for_a_growing_time(
    conn: asyncpg.Connection, passwords: Passwords
) -> None:
    await service.register(conn, passwords, email="alice@example.org", password=PASSWORD, roles=["user"], now=NOW)
    for _ in range(5):
        with pytest.raises(AuthError, match="wrong e-mail or password"):
            await login(conn, passwords, "wrong password entirely")
    with pytest.raises(AuthError, match="too many") as locked:
        await login(conn, passwords)  # the right password during the lockout is refused
    assert locked.value.retry_after_s == 31
    after_first = NOW + timedelta(seconds=31)
    with pytest.raises(AuthError, match="wrong e-mail or password"):
        await login(conn, passwords, "still wrong", at=after_first)
    with pytest.raises(AuthError, match="too many") as longer:
        await login(conn, passwords, at=after_first)
    assert longer.value.retry_after_s == 61  # it grows
    assert (await login(conn, passwords, at=after_first + timedelta(seconds=61))).access_token
    rows = await conn.fetch("SELECT headers::text AS h, body FROM outbox ORDER BY id")
    locked_out = [
        json.loads(bytes(r["body"])) for r in rows if json.loads(r["h"])["ce-type"] == "auth.user.locked_out.v1"
    ]
    assert [(e["failures"], e["source"]) for e in locked_out] == [(5, "10.0.0.1"), (6, "10.0.0.1")]
    assert locked_out[1]["locked_until"].startswith((after_first + timedelta(seconds=60)).isoformat()[:19])


async def test_unknown_accounts_and_weak_passwords_are_refused(conn: asyncpg.Connection, passwords: Passwords) -> None:
    with pytest.raises(AuthError, match="wrong e-mail or password"):
        await login(conn, passwords)
    with pytest.raises(AuthError) as weak:
        await service.register(conn, passwords, email="bob@example.org", password="short", roles=["user"], now=NOW)
    assert weak.value.code == "weak_password"
    await service.register(conn, passwords, email="bob@example.org", password=PASSWORD, roles=["user"], now=NOW)
    with pytest.raises(AuthError) as taken:
        await service.register(conn, passwords, email="BOB@example.org", password=PASSWORD, roles=["user"], now=NOW)
    assert taken.value.code == "email_taken"


async def test_rotation_keeps_old_tokens_valid_until_expiry(conn: asyncpg.Connection, passwords: Passwords) -> None:
    await service.register(conn, passwords, email="alice@example.org", password=PASSWORD, roles=["user"], now=NOW)
    old = await login(conn, passwords)
    later = NOW + timedelta(seconds=60)
    new_kid = await service.rotate_signing_key(conn, CONFIG, now=later)
    new = await login(conn, passwords, at=later)
    published = await keys(conn, later)
    for pair in (old, new):
        verify_access_token(
            pair.access_token, published, issuer=CONFIG.issuer, audience=CONFIG.audience, now=later.timestamp()
        )
    assert jwt.get_unverified_header(new.access_token)["kid"] == new_kid
    expired = NOW + timedelta(seconds=CONFIG.access_ttl_s)
    with pytest.raises(TokenError):
        verify_access_token(
            old.access_token,
            await keys(conn, expired),
            issuer=CONFIG.issuer,
            audience=CONFIG.audience,
            now=expired.timestamp(),
        )
