"""A user's own account against a real PostgreSQL: password change, sessions, and an admin's reset and enable."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from fog_auth import admin, own_account, service
from fog_auth.credentials import hash_secret
from fog_auth.passwords import Passwords
from fog_auth.service import AuthConfig, AuthError
from fog_shared.commands import auth as contract

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CONFIG = AuthConfig()
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long passphrase"
EMAIL = "alice@example.org"


@pytest.fixture
async def alice(conn: asyncpg.Connection, passwords: Passwords) -> str:
    return str(await service.register(conn, passwords, email=EMAIL, password=PASSWORD, roles=["user"], now=NOW))


async def login(
    conn: asyncpg.Connection, passwords: Passwords, password: str = PASSWORD, *, source: str = "10.0.0.1"
) -> service.TokenPair:
    return await service.login(conn, passwords, CONFIG, email=EMAIL, password=password, source=source, now=NOW)


async def refreshable(conn: asyncpg.Connection, pair: service.TokenPair) -> bool:
    try:
        await service.refresh(conn, CONFIG, refresh_token=pair.refresh_token, now=NOW)
    except AuthError:
        return False
    return True


async def events(conn: asyncpg.Connection, type_name: str) -> list[dict[str, object]]:
    rows = await conn.fetch("SELECT headers::text AS h, body FROM outbox ORDER BY id")
    return [json.loads(bytes(r["body"])) for r in rows if json.loads(r["h"])["ce-type"] == type_name]


def change(user_id: str, session_id: str, current: str, new: str) -> contract.PasswordChangeCommand:
    return contract.PasswordChangeCommand(
        user_id=user_id, session_id=session_id, current_password=current, new_password=new, source="192.0.2.9"
    )


async def test_a_password_change_keeps_this_session_and_ends_every_other(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    here, laptop, phone = [await login(conn, passwords) for _ in range(3)]
    changed = await own_account.change_password(
        conn, passwords, change(alice, here.session_id, PASSWORD, NEW_PASSWORD), now=NOW
    )
    assert changed.sessions_ended == 2
    assert await refreshable(conn, here)
    assert not await refreshable(conn, laptop)
    assert not await refreshable(conn, phone)
    with pytest.raises(AuthError, match="wrong e-mail or password"):
        await login(conn, passwords)  # the old password is gone
    assert (await login(conn, passwords, NEW_PASSWORD)).access_token
    [event] = await events(conn, "auth.user.password_changed.v1")
    assert (event["user_id"], event["how"], event["sessions_ended"]) == (alice, "changed", 2)
    assert PASSWORD not in json.dumps(event)
    assert NEW_PASSWORD not in json.dumps(event)
    reasons = {r["revoked_reason"] for r in await conn.fetch("SELECT revoked_reason FROM sessions")}
    assert reasons == {None, "password_changed"}


async def test_a_wrong_current_password_changes_nothing_and_counts_towards_the_lockout(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    here = await login(conn, passwords)
    for _ in range(5):
        with pytest.raises(AuthError) as wrong:
            await own_account.change_password(
                conn, passwords, change(alice, here.session_id, "not my password at all", NEW_PASSWORD), now=NOW
            )
        assert wrong.value.code == "wrong_password"
    with pytest.raises(AuthError) as locked:  # the right one is refused while locked, as at login
        await own_account.change_password(
            conn, passwords, change(alice, here.session_id, PASSWORD, NEW_PASSWORD), now=NOW
        )
    assert locked.value.code == "locked"
    with pytest.raises(AuthError, match="too many"):
        await login(conn, passwords)
    assert await events(conn, "auth.user.password_changed.v1") == []
    [locked_out] = await events(conn, "auth.user.locked_out.v1")
    assert (locked_out["user_id"], locked_out["failures"], locked_out["source"]) == (alice, 5, "192.0.2.9")


async def test_a_new_password_must_pass_the_policy_and_differ(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    here = await login(conn, passwords)
    for weak in ("short", PASSWORD, "alice-in-wonderland-2026"):
        with pytest.raises(AuthError) as refused:
            await own_account.change_password(conn, passwords, change(alice, here.session_id, PASSWORD, weak), now=NOW)
        assert refused.value.code == "weak_password", weak
    assert (await login(conn, passwords)).access_token  # still the old one


async def test_sessions_are_listed_latest_first_and_ended_one_or_all_but_this(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    old = await login(conn, passwords, source="192.0.2.7")
    here = await login(conn, passwords, source="10.0.0.1")
    gone = await login(conn, passwords)
    await service.logout(conn, refresh_token=gone.refresh_token, now=NOW)
    later = NOW + timedelta(minutes=5)
    await service.refresh(conn, CONFIG, refresh_token=here.refresh_token, now=later)
    listed = await own_account.list_sessions(
        conn, contract.SessionQuery(user_id=alice, session_id=here.session_id), now=NOW
    )
    assert [(s.id, s.source, s.current) for s in listed.items] == [
        (here.session_id, "10.0.0.1", True),
        (old.session_id, "192.0.2.7", False),
    ]
    assert listed.items[0].last_active_at == later

    bob = str(
        await service.register(conn, passwords, email="bob@example.org", password=PASSWORD, roles=["user"], now=NOW)
    )
    with pytest.raises(AuthError, match="no such session"):  # not his to end
        await own_account.end_session(conn, contract.SessionEndCommand(user_id=bob, session_id=old.session_id), now=NOW)
    with pytest.raises(AuthError, match="no such session"):
        await own_account.end_session(conn, contract.SessionEndCommand(user_id=alice, session_id="not-a-uuid"), now=NOW)
    assert await refreshable(conn, old)
    await own_account.end_session(conn, contract.SessionEndCommand(user_id=alice, session_id=old.session_id), now=NOW)
    assert [
        s.id
        for s in (
            await own_account.list_sessions(
                conn, contract.SessionQuery(user_id=alice, session_id=here.session_id), now=NOW
            )
        ).items
    ] == [here.session_id]

    others = [await login(conn, passwords) for _ in range(2)]
    ended = await own_account.end_other_sessions(
        conn, contract.SessionQuery(user_id=alice, session_id=here.session_id), now=NOW
    )
    assert ended.sessions_ended == 2
    assert not any([await refreshable(conn, other) for other in others])
    revoked = await events(conn, "auth.session.revoked.v1")
    assert sum(1 for e in revoked if e["reason"] == "ended_by_user") == 3


async def test_a_reset_token_sets_a_new_password_once_and_ends_every_session(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    sessions = [await login(conn, passwords) for _ in range(2)]
    for _ in range(6):  # she forgot it, and locked herself out trying
        with pytest.raises(AuthError):
            await login(conn, passwords, "what was it again")
    issue = contract.PasswordResetIssueCommand(user_id=alice, by="an-admin", expires_in_s=3600)
    first = await admin.issue_password_reset(conn, issue, now=NOW)
    issued = await admin.issue_password_reset(conn, issue, now=NOW)  # a second replaces the first
    assert issued.token.startswith("fogr_")
    assert issued.email == EMAIL
    assert issued.expires_at == NOW + timedelta(hours=1)
    stored = [bytes(r["token_hash"]) for r in await conn.fetch("SELECT token_hash FROM password_resets")]
    assert stored == [hash_secret(issued.token)]  # only a hash, and only the latest

    def reset(token: str, password: str = NEW_PASSWORD) -> contract.PasswordResetRequest:
        return contract.PasswordResetRequest(token=token, new_password=password)

    with pytest.raises(AuthError) as replaced:
        await own_account.reset_password(conn, passwords, reset(first.token), now=NOW)
    assert replaced.value.code == "invalid_reset_token"
    with pytest.raises(AuthError) as weak:  # a weak password leaves the token to try again
        await own_account.reset_password(conn, passwords, reset(issued.token, "short"), now=NOW)
    assert weak.value.code == "weak_password"
    done = await own_account.reset_password(conn, passwords, reset(issued.token), now=NOW)
    assert done.sessions_ended == 2
    assert not any([await refreshable(conn, s) for s in sessions])
    assert (await login(conn, passwords, NEW_PASSWORD)).access_token  # and the lockout is lifted
    with pytest.raises(AuthError) as spent:
        await own_account.reset_password(conn, passwords, reset(issued.token, "yet another passphrase"), now=NOW)
    assert spent.value.code == "invalid_reset_token"
    [changed] = await events(conn, "auth.user.password_changed.v1")
    assert (changed["how"], changed["sessions_ended"]) == ("reset", 2)
    assert [e["issued_by"] for e in await events(conn, "auth.password_reset.issued.v1")] == ["an-admin", "an-admin"]


async def test_a_reset_token_expires_and_does_not_work_for_a_disabled_account(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    issue = contract.PasswordResetIssueCommand(user_id=alice, by="an-admin", expires_in_s=300)
    issued = await admin.issue_password_reset(conn, issue, now=NOW)
    request = contract.PasswordResetRequest(token=issued.token, new_password=NEW_PASSWORD)
    with pytest.raises(AuthError) as expired:
        await own_account.reset_password(conn, passwords, request, now=NOW + timedelta(seconds=300))
    assert expired.value.code == "invalid_reset_token"
    issued = await admin.issue_password_reset(conn, issue, now=NOW)
    await admin.disable_user(conn, contract.DisableUserCommand(user_id=alice, by="an-admin"), now=NOW)
    request = contract.PasswordResetRequest(token=issued.token, new_password=NEW_PASSWORD)
    with pytest.raises(AuthError) as disabled:
        await own_account.reset_password(conn, passwords, request, now=NOW)
    assert disabled.value.code == "account_disabled"
    with pytest.raises(AuthError, match="no such user"):
        await admin.issue_password_reset(conn, issue.model_copy(update={"user_id": str(uuid.uuid4())}), now=NOW)


async def test_an_enabled_account_logs_in_again_and_enabling_twice_is_one_event(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    before = await login(conn, passwords)
    await admin.disable_user(conn, contract.DisableUserCommand(user_id=alice, by="an-admin"), now=NOW)
    with pytest.raises(AuthError, match="disabled"):
        await login(conn, passwords)
    command = contract.EnableUserCommand(user_id=alice, by="an-admin")
    view = await admin.enable_user(conn, command, now=NOW)
    assert view.disabled is False
    assert (await admin.enable_user(conn, command, now=NOW)).disabled is False
    assert (await login(conn, passwords)).access_token
    assert not await refreshable(conn, before)  # a disabled account's sessions stay ended
    [enabled] = await events(conn, "auth.user.enabled.v1")
    assert (enabled["user_id"], enabled["enabled_by"]) == (alice, "an-admin")


async def test_an_admin_finds_an_account_by_its_address(
    conn: asyncpg.Connection, passwords: Passwords, alice: str
) -> None:
    await service.register(conn, passwords, email="bob@example.org", password=PASSWORD, roles=["user"], now=NOW)
    found = await admin.list_users(conn, contract.ListUsersQuery(email="ALICE@example.org"))
    assert [u.id for u in found.items] == [alice]
    assert (await admin.list_users(conn, contract.ListUsersQuery(email="carol@example.org"))).items == []
    assert len((await admin.list_users(conn, contract.ListUsersQuery())).items) == 2


async def test_an_admin_sees_a_lockout_and_ends_it(conn: asyncpg.Connection, passwords: Passwords, alice: str) -> None:
    await login(conn, passwords)
    for _ in range(5):
        with pytest.raises(AuthError):
            await login(conn, passwords, "not it at all")
    seen = await admin.get_user(conn, contract.UserQuery(user_id=alice))
    assert (seen.failed_logins, seen.last_login_at) == (5, NOW)
    assert seen.locked_until == NOW + timedelta(seconds=30)
    assert seen.password_changed_at is None
    with pytest.raises(AuthError, match="too many"):
        await login(conn, passwords)
    command = contract.UnlockUserCommand(user_id=alice, by="an-admin")
    unlocked = await admin.unlock_user(conn, command, now=NOW)
    assert (unlocked.failed_logins, unlocked.locked_until) == (0, None)
    await admin.unlock_user(conn, command, now=NOW)  # nothing to end: no second event
    assert (await login(conn, passwords)).access_token
    assert [e["unlocked_by"] for e in await events(conn, "auth.user.unlocked.v1")] == ["an-admin"]
    with pytest.raises(AuthError, match="no such user"):
        await admin.get_user(conn, contract.UserQuery(user_id=str(uuid.uuid4())))
