"""A user's password and sessions, and an admin's reset and enable, through the gateway in front of a real auth
service, NATS and Postgres: tokens of ended sessions stop working at the gateway, as after a logout."""

from __future__ import annotations

from gateway_stack import PASSWORD, Stack

NEW_PASSWORD = "a different long passphrase"


async def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(stack: Stack) -> None:
    http = stack.http
    here = await stack.register_and_login()
    laptop = await stack.login("alice@example.org", PASSWORD)
    wrong = await http.post(
        "/v1/me/password",
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        headers=stack.bearer(here),
    )
    assert wrong.status_code == 403, wrong.text  # not 401: the token is fine, a client must not refresh
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json()["code"] == "wrong_password"
    weak = await http.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=stack.bearer(here)
    )
    assert weak.status_code == 422
    changed = await http.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=stack.bearer(here)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"sessions_ended": 1}
    await stack.until_status("/v1/me", laptop, 401)
    assert (await http.get("/v1/me", headers=stack.bearer(here))).status_code == 200
    old = await http.post("/v1/auth/login", json={"email": "alice@example.org", "password": PASSWORD})
    assert old.status_code == 401
    assert (await stack.login("alice@example.org", NEW_PASSWORD))["access_token"]


async def test_an_api_key_can_neither_change_the_password_nor_touch_sessions(stack: Stack) -> None:
    http = stack.http
    user = await stack.register_and_login()
    created = await http.post("/v1/api-keys", json={"name": "ci", "scopes": ["user"]}, headers=stack.bearer(user))
    key = {"X-API-Key": created.json()["key"]}
    calls = [
        ("POST", "/v1/me/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        ("GET", "/v1/me/sessions", None),
        ("POST", "/v1/me/sessions/end-others", None),
    ]
    for method, path, body in calls:
        refused = await http.request(method, path, json=body, headers=key)
        assert refused.status_code == 403, (method, path, refused.text)
    assert (
        await http.post("/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    ).status_code == 401
    assert (await stack.login("alice@example.org", PASSWORD))["access_token"]  # unchanged


async def test_sessions_are_listed_and_ended_one_at_a_time_or_all_but_this(stack: Stack) -> None:
    http = stack.http
    here = await stack.register_and_login()
    others = [await stack.login("alice@example.org", PASSWORD) for _ in range(3)]
    listed = await http.get("/v1/me/sessions", headers=stack.bearer(here))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert len(items) == 4
    [current] = [s for s in items if s["current"]]
    me = (await http.get("/v1/me", headers=stack.bearer(here))).json()
    assert current["id"] == me["session_id"]
    assert current["source"] == "127.0.0.1"
    other_ids = {(await http.get("/v1/me", headers=stack.bearer(o))).json()["session_id"] for o in others}
    assert {s["id"] for s in items if not s["current"]} == other_ids

    first = (await http.get("/v1/me", headers=stack.bearer(others[0]))).json()["session_id"]
    ended = await http.delete(f"/v1/me/sessions/{first}", headers=stack.bearer(here))
    assert ended.status_code == 204, ended.text
    await stack.until_status("/v1/me", others[0], 401)
    assert (await http.get("/v1/me", headers=stack.bearer(others[1]))).status_code == 200

    bob = await stack.register_and_login("bob@example.org")
    bobs = (await http.get("/v1/me", headers=stack.bearer(bob))).json()["session_id"]
    not_hers = await http.delete(f"/v1/me/sessions/{bobs}", headers=stack.bearer(here))
    assert not_hers.status_code == 404
    assert (await http.get("/v1/me", headers=stack.bearer(bob))).status_code == 200

    rest = await http.post("/v1/me/sessions/end-others", headers=stack.bearer(here))
    assert rest.json() == {"sessions_ended": 2}
    for other in others[1:]:
        await stack.until_status("/v1/me", other, 401)
    assert [s["current"] for s in (await http.get("/v1/me/sessions", headers=stack.bearer(here))).json()["items"]] == [
        True
    ]


async def test_an_admin_issues_a_reset_the_user_spends_it_once(stack: Stack) -> None:
    http = stack.http
    admin, user = await stack.admin(), await stack.register_and_login()
    found = await http.get("/v1/admin/users", params={"email": "ALICE@example.org"}, headers=stack.bearer(admin))
    [alice] = found.json()["items"]
    assert alice["email"] == "alice@example.org"
    refused = await http.post(f"/v1/admin/users/{alice['id']}/password-reset", headers=stack.bearer(user))
    assert refused.status_code == 403  # a user cannot reset even their own this way
    issued = await http.post(
        f"/v1/admin/users/{alice['id']}/password-reset", json={"expires_in_s": 600}, headers=stack.bearer(admin)
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["token"]
    assert token.startswith("fogr_")
    too_long = await http.post(
        f"/v1/admin/users/{alice['id']}/password-reset", json={"expires_in_s": 10**7}, headers=stack.bearer(admin)
    )
    assert too_long.status_code == 422  # and refused before it replaced the token

    reset = await http.post("/v1/auth/password-reset", json={"token": token, "new_password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"sessions_ended": 1}
    await stack.until_status("/v1/me", user, 401)
    assert (await stack.login("alice@example.org", NEW_PASSWORD))["access_token"]
    again = await http.post("/v1/auth/password-reset", json={"token": token, "new_password": "yet another passphrase"})
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_reset_token"
    unknown = await http.post(
        f"/v1/admin/users/{'0' * 8}-0000-0000-0000-{'0' * 12}/password-reset", headers=stack.bearer(admin)
    )
    assert unknown.status_code == 404


async def test_an_admin_enables_a_disabled_account_and_its_api_key_works_again(stack: Stack) -> None:
    http = stack.http
    admin, user = await stack.admin(), await stack.register_and_login()
    key = (await http.post("/v1/api-keys", json={"name": "k", "scopes": ["user"]}, headers=stack.bearer(user))).json()[
        "key"
    ]
    user_id = (await http.get("/v1/me", headers=stack.bearer(user))).json()["user_id"]
    await http.post(f"/v1/admin/users/{user_id}/disable", headers=stack.bearer(admin))
    await stack.until_status("/v1/me", key, 401)
    await stack.until_status("/v1/me", user, 401)  # the user's own session ended with the disable
    bob = await stack.register_and_login("bob@example.org")
    enabled = await http.post(f"/v1/admin/users/{user_id}/enable", headers=stack.bearer(bob))
    assert enabled.status_code == 403
    enabled = await http.post(f"/v1/admin/users/{user_id}/enable", headers=stack.bearer(admin))
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["disabled"] is False
    await stack.until_status("/v1/me", key, 200)
    assert (await stack.login("alice@example.org", PASSWORD))["access_token"]
