"""``fogctl register``, ``fogctl api-key`` and ``fogctl admin`` against a gateway served on a real port,
with the real auth service behind it."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
from gateway_stack import ADMIN_EMAIL, ADMIN_PASSWORD, Stack
from typer.testing import CliRunner

from fog_shared.testing.waiting import wait_until
from fogctl.__main__ import app

runner = CliRunner()
PASSWORD = "a long passphrase for the shell"


async def fogctl(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    # fogctl runs its own event loop: it gets a thread of its own.
    result = await asyncio.to_thread(runner.invoke, app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    monkeypatch.setenv("COLUMNS", "250")
    return tmp_path / "fog"


def new_email() -> str:
    return f"shell-{uuid.uuid4().hex[:12]}@example.org"


async def test_register_creates_the_account_and_logs_it_in(stack: Stack, config_dir: Path) -> None:
    url, email = await stack.serve_gateway(), new_email()
    code, out, err = await fogctl("register", "--url", url, "--email", email, "--provider", "--password-stdin",
                                  stdin=PASSWORD + "\n")  # fmt: skip
    assert code == 0, err
    assert f"Registered and logged in to {url} as {email}." in err
    assert f"email       {email}" in out
    code, out, err = await fogctl("whoami", "--json")
    assert code == 0, err
    me = json.loads(out)
    assert (me["email"], sorted(me["roles"])) == (email, ["provider", "user"])
    code, _, err = await fogctl("register", "--url", url, "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 1
    assert f"{url} refused: 409" in err  # the address is taken: nothing else changed
    typed = new_email()  # at a terminal: the email, then the password twice (a typo is asked again)
    code, _, err = await fogctl(
        "register", "--url", url, stdin=f"{typed}\n{PASSWORD}\n{PASSWORD}x\n{PASSWORD}\n{PASSWORD}\n"
    )
    assert code == 0, err
    assert f"as {typed}." in err
    code, _, err = await fogctl("register", "--url", url, "--email", new_email(), "--password-stdin", stdin="short\n")
    assert code == 1
    assert "422" in err
    assert "password" in err


async def test_an_api_key_is_created_listed_used_and_revoked(stack: Stack, config_dir: Path) -> None:
    url, email = await stack.serve_gateway(), new_email()
    code, _, err = await fogctl("register", "--url", url, "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0, err
    code, out, err = await fogctl("api-key", "create", "ci", "--expires-in", "30d")
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("fogk_")
    assert "\n" not in secret
    assert "Created API key" in err
    assert "expires" in err
    async with httpx.AsyncClient(base_url=url) as http:
        me = await http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
        assert me.status_code == 200, me.text
        key_id = me.json()["api_key_id"]

        code, out, err = await fogctl("api-key", "list", "--json")
        assert code == 0, err
        (listed,) = json.loads(out)["items"]
        assert (listed["id"], listed["name"], listed["scopes"], listed["revoked_at"]) == (key_id, "ci", ["user"], None)
        assert "key" not in listed
        assert secret not in out
        code, out, err = await fogctl("api-key", "list")
        assert code == 0, err
        assert key_id in out
        assert "ci" in out

        code, _, err = await fogctl("api-key", "create", "too-much", "--scope", "admin")
        assert code == 1
        assert "refused: 403" in err  # a key's scope is within its owner's roles
        code, _, err = await fogctl("api-key", "create", "x", "--expires-in", "soon")
        assert code == 2
        assert "not a duration" in err

        code, _, err = await fogctl("api-key", "revoke", key_id)
        assert code == 0, err
        assert f"Revoked API key {key_id}." in err

        async def refused() -> bool:  # gateways drop the key's cached answer when they hear of the revocation
            return (await http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})).status_code == 401

        await wait_until(refused, timeout=5, what="the revoked key refused")
        code, out, err = await fogctl("api-key", "list", "--json")
        assert json.loads(out)["items"][0]["revoked_at"] is not None


async def test_an_admin_lists_users_sets_roles_disables_and_rotates(stack: Stack, config_dir: Path) -> None:
    url, email = await stack.serve_gateway(), new_email()
    async with httpx.AsyncClient(base_url=url) as http:
        user_id = (await http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})).json()["user_id"]
    code, _, err = await fogctl("admin", "users")
    assert code == 1
    assert "not logged in" in err

    code, _, err = await fogctl("login", "--url", url, "--email", ADMIN_EMAIL, "--password-stdin",
                                stdin=ADMIN_PASSWORD + "\n")  # fmt: skip
    assert code == 0, err
    code, out, err = await fogctl("admin", "users", "--limit", "1000", "--json")
    assert code == 0, err
    listed = {user["id"]: user for user in json.loads(out)["items"]}
    assert (listed[user_id]["email"], listed[user_id]["roles"], listed[user_id]["disabled"]) == (email, ["user"], False)
    code, out, err = await fogctl("admin", "users", "--limit", "1")
    assert code == 0, err
    assert ADMIN_EMAIL in out  # the oldest account first
    assert "More may follow: --offset 1" in err

    code, _, err = await fogctl("admin", "roles", user_id, "user", "provider")
    assert code == 0, err
    assert f"{email} ({user_id}) now has: " in err
    code, _, err = await fogctl("admin", "roles", user_id, "root")
    assert code == 1
    assert "422" in err
    code, _, err = await fogctl("admin", "disable", user_id)
    assert code == 0, err
    async with httpx.AsyncClient(base_url=url) as http:
        login = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 403, login.text
    code, out, err = await fogctl("admin", "users", "--limit", "1000", "--json")
    disabled = {user["id"]: user for user in json.loads(out)["items"]}[user_id]
    assert (disabled["disabled"], sorted(disabled["roles"])) == (True, ["provider", "user"])

    code, _, err = await fogctl("admin", "rotate-signing-key")
    assert code == 0, err
    assert "Tokens are now signed with key " in err
    code, _, err = await fogctl("whoami")
    assert code == 0, err  # the session's token, signed by the retired key, still verifies


async def test_a_user_changes_the_password_and_ends_the_other_sessions(stack: Stack, config_dir: Path) -> None:
    url, email = await stack.serve_gateway(), new_email()
    code, _, err = await fogctl("register", "--url", url, "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0, err
    elsewhere = await stack.login(email, PASSWORD)  # another shell, on another machine
    code, out, err = await fogctl("session", "list")
    assert code == 0, err
    assert out.count("127.0.0.1") == 2
    code, out, err = await fogctl("session", "list", "--json")
    items = json.loads(out)["items"]
    assert sorted(s["current"] for s in items) == [False, True]

    new = "a new passphrase for the shell"
    code, _, err = await fogctl("password", "change", "--password-stdin", stdin=f"not it at all\n{new}\n")
    assert code == 1
    assert "403" in err
    assert "current password is not right" in err
    code, _, err = await fogctl("password", "change", stdin=f"{PASSWORD}\n{new}\n{new}\n")  # at a terminal
    assert code == 0, err
    assert "Password changed; 1 other session ended (this one stays)." in err
    await stack.until_status("/v1/me", elsewhere, 401)
    code, _, err = await fogctl("whoami")
    assert code == 0, err  # this shell's session stays

    again = await stack.login(email, new)
    code, _, err = await fogctl("session", "end")
    assert code != 0
    code, _, err = await fogctl("session", "end", "--others")
    assert code == 0, err
    assert "Ended 1 other session." in err
    await stack.until_status("/v1/me", again, 401)


async def test_an_admin_resets_a_forgotten_password_and_enables_an_account_by_its_address(
    stack: Stack, config_dir: Path
) -> None:
    url, email = await stack.serve_gateway(), new_email()
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})).status_code == 201
    code, _, err = await fogctl("login", "--url", url, "--email", ADMIN_EMAIL, "--password-stdin",
                                stdin=ADMIN_PASSWORD + "\n")  # fmt: skip
    assert code == 0, err
    code, out, err = await fogctl("admin", "users", "--email", email.upper(), "--json")
    assert code == 0, err
    assert [user["email"] for user in json.loads(out)["items"]] == [email]
    async with httpx.AsyncClient(base_url=url) as http:  # she forgot it, and locked herself out trying
        for _ in range(5):
            await http.post("/v1/auth/login", json={"email": email, "password": "what was it again"})
    code, out, err = await fogctl("admin", "user", email)
    assert code == 0, err
    assert "locked           until " in out
    assert "failed_logins    5 in a row" in out
    code, _, err = await fogctl("admin", "unlock", email)
    assert code == 0, err
    assert f"Unlocked {email}" in err
    code, out, err = await fogctl("admin", "user", email, "--json")
    assert (json.loads(out)["locked_until"], json.loads(out)["failed_logins"]) == (None, 0)
    code, _, err = await fogctl("admin", "disable", email.upper())  # an address, in any case
    assert code == 0, err
    assert f"Disabled {email}" in err
    code, _, err = await fogctl("admin", "enable", email)
    assert code == 0, err
    assert f"Enabled {email}" in err
    code, _, err = await fogctl("admin", "enable", "nobody@example.org")
    assert code == 1
    assert "no account has the address nobody@example.org" in err

    code, out, err = await fogctl("admin", "reset-password", email, "--expires-in", "30m")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("fogr_")
    assert f"Password reset for {email}" in err
    code, _, err = await fogctl("admin", "reset-password", email, "--expires-in", "30d")
    assert code == 1  # longer than the gateway allows: refused, and the first token still works
    assert "expires_in_s" in err

    code, _, err = await fogctl("logout")
    assert code == 0, err
    new = "the passphrase she chose anew"
    code, _, err = await fogctl("password", "reset", token, "--url", url, "--password-stdin", stdin=new + "\n")
    assert code == 0, err
    assert f"Password set; no session of the account ended. Log in with it: fogctl login --url {url}" in err
    code, _, err = await fogctl("login", "--url", url, "--email", email, "--password-stdin", stdin=new + "\n")
    assert code == 0, err
    code, _, err = await fogctl("password", "reset", token, "--password-stdin", stdin="one more passphrase\n")
    assert code == 1  # once only (the gateway is the saved session's)
    assert "not valid" in err
