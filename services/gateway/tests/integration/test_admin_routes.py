"""Admin routes, roles, disabling, key rotation and lockout through the gateway."""

from __future__ import annotations

import jwt
from gateway_stack import PASSWORD, Stack


async def test_a_user_gets_403_on_every_admin_route(stack: Stack) -> None:
    user = await stack.register_and_login()
    me = (await stack.http.get("/v1/me", headers=stack.bearer(user))).json()
    calls = [
        ("GET", "/v1/admin/users", None),
        ("PUT", f"/v1/admin/users/{me['user_id']}/roles", {"roles": ["admin"]}),
        ("POST", f"/v1/admin/users/{me['user_id']}/disable", None),
        ("POST", f"/v1/admin/users/{me['user_id']}/enable", None),
        ("GET", f"/v1/admin/users/{me['user_id']}", None),
        ("POST", f"/v1/admin/users/{me['user_id']}/unlock", None),
        ("POST", f"/v1/admin/users/{me['user_id']}/password-reset", None),
        ("POST", "/v1/admin/signing-keys/rotate", None),
    ]
    for method, path, body in calls:
        refused = await stack.http.request(method, path, json=body, headers=stack.bearer(user))
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"


async def test_changing_roles_ends_the_users_sessions(stack: Stack) -> None:
    admin, user = await stack.admin(), await stack.register_and_login()
    user_id = (await stack.http.get("/v1/me", headers=stack.bearer(user))).json()["user_id"]
    changed = await stack.http.put(
        f"/v1/admin/users/{user_id}/roles", json={"roles": ["user", "provider"]}, headers=stack.bearer(admin)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["roles"] == ["provider", "user"]
    await stack.until_status("/v1/me", user, 401)  # the old token carried the old roles
    fresh = await stack.login("alice@example.org", PASSWORD)
    assert (await stack.http.get("/v1/me", headers=stack.bearer(fresh))).json()["roles"] == ["provider", "user"]


async def test_a_disabled_account_cannot_log_in_and_its_keys_stop(stack: Stack) -> None:
    admin, user = await stack.admin(), await stack.register_and_login()
    key = (
        await stack.http.post("/v1/api-keys", json={"name": "k", "scopes": ["user"]}, headers=stack.bearer(user))
    ).json()["key"]
    assert (await stack.http.get("/v1/me", headers={"X-API-Key": key})).status_code == 200
    user_id = (await stack.http.get("/v1/me", headers=stack.bearer(user))).json()["user_id"]
    disabled = await stack.http.post(f"/v1/admin/users/{user_id}/disable", headers=stack.bearer(admin))
    assert disabled.json()["disabled"] is True
    await stack.until_status("/v1/me", user, 401)
    await stack.until_status("/v1/me", key, 401)
    login = await stack.http.post("/v1/auth/login", json={"email": "alice@example.org", "password": PASSWORD})
    assert login.status_code == 403


async def test_the_last_admin_cannot_be_demoted_or_disabled(stack: Stack) -> None:
    admin = await stack.admin()
    admin_id = (await stack.http.get("/v1/me", headers=stack.bearer(admin))).json()["user_id"]
    demote = await stack.http.put(
        f"/v1/admin/users/{admin_id}/roles", json={"roles": ["user"]}, headers=stack.bearer(admin)
    )
    assert demote.status_code == 409
    disable = await stack.http.post(f"/v1/admin/users/{admin_id}/disable", headers=stack.bearer(admin))
    assert disable.status_code == 409
    users = (await stack.http.get("/v1/admin/users", headers=stack.bearer(admin))).json()["items"]
    assert [u["roles"] for u in users] == [["admin", "user"]]


async def test_after_rotation_old_tokens_verify_and_new_ones_use_the_new_key(stack: Stack) -> None:
    admin = await stack.admin()
    old_kid = jwt.get_unverified_header(admin["access_token"])["kid"]
    rotated = await stack.http.post("/v1/admin/signing-keys/rotate", headers=stack.bearer(admin))
    assert rotated.status_code == 200
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid
    assert (await stack.http.get("/v1/me", headers=stack.bearer(admin))).status_code == 200
    fresh = await stack.admin()
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new_kid
    assert (await stack.http.get("/v1/me", headers=stack.bearer(fresh))).status_code == 200
    published = {k["kid"] for k in (await stack.http.get("/.well-known/jwks.json")).json()["keys"]}
    assert published == {old_kid, new_kid}


async def test_wrong_passwords_lock_the_account_for_a_growing_time(stack: Stack) -> None:
    await stack.register_and_login()
    wrong = {"email": "alice@example.org", "password": "not the password at all"}
    statuses = [(await stack.http.post("/v1/auth/login", json=wrong)).status_code for _ in range(5)]
    assert statuses == [401] * 5, "the fifth failure starts a 30 s lockout (then 60 s, 120 s, …)"
    locked = await stack.http.post("/v1/auth/login", json={"email": "alice@example.org", "password": PASSWORD})
    assert locked.status_code == 429, "the right password is refused during the lockout"
    assert 1 <= int(locked.headers["retry-after"]) <= 31
    assert locked.json()["code"] == "locked"
