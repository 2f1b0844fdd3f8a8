"""API keys and node credentials through the gateway, in front of a real auth service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway_stack import Stack


async def test_api_key_acts_for_its_owner_within_its_scope(stack: Stack) -> None:
    http = stack.http
    tokens = await stack.register_and_login(roles=["user", "provider"])
    created = await http.post("/v1/api-keys", json={"name": "ci", "scopes": ["user"]}, headers=stack.bearer(tokens))
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("fogk_")

    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        me = await http.get("/v1/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["kind"] == "api_key"
        assert me.json()["roles"] == ["user"], "the key's scope, not the owner's roles"
    # Scope [user] does not include provider: provider routes refuse the key.
    assert (await http.post("/v1/nodes/n1/credential", headers={"X-API-Key": key})).status_code == 403
    # A key cannot mint keys.
    minted = await http.post("/v1/api-keys", json={"name": "x", "scopes": ["user"]}, headers={"X-API-Key": key})
    assert minted.status_code == 403

    listed = (await http.get("/v1/api-keys", headers=stack.bearer(tokens))).json()["items"]
    assert [k["name"] for k in listed] == ["ci"]
    assert listed[0]["last_used_at"] is not None
    assert "key" not in listed[0], "the secret is shown once, at creation"


async def test_an_api_key_cannot_exceed_its_owners_roles(stack: Stack) -> None:
    tokens = await stack.register_and_login()
    wider = await stack.http.post(
        "/v1/api-keys", json={"name": "admin please", "scopes": ["admin"]}, headers=stack.bearer(tokens)
    )
    assert wider.status_code == 403
    assert wider.json()["code"] == "scope_exceeds_roles"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    expired = await stack.http.post(
        "/v1/api-keys", json={"name": "old", "scopes": ["user"], "expires_at": past}, headers=stack.bearer(tokens)
    )
    assert expired.status_code == 422


async def test_an_admins_key_scoped_to_user_is_refused_on_admin_routes(stack: Stack) -> None:
    admin = await stack.admin()
    body = {"name": "reporting", "scopes": ["user"]}
    key = (await stack.http.post("/v1/api-keys", json=body, headers=stack.bearer(admin))).json()["key"]
    assert (await stack.http.get("/v1/admin/users", headers={"X-API-Key": key})).status_code == 403
    body = {"name": "ops", "scopes": ["admin"]}
    admin_key = (await stack.http.post("/v1/api-keys", json=body, headers=stack.bearer(admin))).json()["key"]
    assert (await stack.http.get("/v1/admin/users", headers={"X-API-Key": admin_key})).status_code == 200


async def test_a_revoked_api_key_is_refused_on_every_gateway(stack: Stack) -> None:
    second = await stack.open_gateway()
    tokens = await stack.register_and_login()
    created = (
        await stack.http.post("/v1/api-keys", json={"name": "k", "scopes": ["user"]}, headers=stack.bearer(tokens))
    ).json()
    for http in (stack.http, second):  # both gateways cache the key's introspection
        assert (await http.get("/v1/me", headers={"X-API-Key": created["key"]})).status_code == 200
    revoked = await stack.http.delete(f"/v1/api-keys/{created['id']}", headers=stack.bearer(tokens))
    assert revoked.status_code == 204
    for http in (stack.http, second):
        await stack.until_status("/v1/me", created["key"], 401, http=http, timeout=1.0)
    other = await stack.register_and_login("mallory@example.org")
    again = await stack.http.delete(f"/v1/api-keys/{created['id']}", headers=stack.bearer(other))
    assert again.status_code == 404, "another user's key looks like no key"


async def test_a_node_credential_acts_only_as_that_node(stack: Stack) -> None:
    http = stack.http
    provider = await stack.register_and_login("pat@example.org", roles=["user", "provider"])
    issued = await http.post("/v1/nodes/edge-1/credential", headers=stack.bearer(provider))
    assert issued.status_code == 201, issued.text
    node = {"Authorization": f"Bearer {issued.json()['credential']}"}
    me = (await http.get("/v1/me", headers=node)).json()
    assert (me["kind"], me["node_id"], me["user_id"], me["roles"]) == ("node", "edge-1", None, ["node"])

    # Not as a user ...
    assert (await http.get("/v1/api-keys", headers=node)).status_code == 403
    assert (await http.get("/v1/admin/users", headers=node)).status_code == 403
    assert (await http.post("/v1/nodes/edge-1/credential", headers=node)).status_code == 403
    # ... nor as another node.
    await http.post("/v1/nodes/edge-2/credential", headers=stack.bearer(provider))
    assert (await http.delete("/v1/nodes/edge-2/credential", headers=node)).status_code == 403
    # Another provider cannot take the node id over.
    thief = await stack.register_and_login("eve@example.org", roles=["user", "provider"])
    assert (await http.post("/v1/nodes/edge-1/credential", headers=stack.bearer(thief))).status_code == 403
    assert (await http.delete("/v1/nodes/edge-1/credential", headers=stack.bearer(thief))).status_code == 404

    # Re-issuing replaces the credential; the node may also revoke itself.
    reissued = (await http.post("/v1/nodes/edge-1/credential", headers=stack.bearer(provider))).json()
    await stack.until_status("/v1/me", issued.json()["credential"], 401)
    fresh = {"X-API-Key": reissued["credential"]}
    assert (await http.delete("/v1/nodes/edge-1/credential", headers=fresh)).status_code == 204
    await stack.until_status("/v1/me", reissued["credential"], 401)


async def test_only_providers_get_node_credentials(stack: Stack) -> None:
    user = await stack.register_and_login()
    assert (await stack.http.post("/v1/nodes/edge-9/credential", headers=stack.bearer(user))).status_code == 403
