"""Finding someone to message by their e-mail address, through the gateway and the real messaging service."""

from __future__ import annotations

from chat_driver import members
from gateway_stack import Stack


async def test_a_person_is_found_by_their_exact_address_whatever_its_case(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    found = await alice.http.get("/v1/people", params={"email": bob.email.upper()}, headers=alice.headers)
    assert found.status_code == 200, found.text
    assert found.json() == {"user_id": bob.id, "email": bob.email}
    sent = await alice.dm(found.json()["user_id"], "found you")  # the member id conversations take
    assert sent.status_code == 201, sent.text

    for nobody in ("nobody@example.org", bob.email.split("@")[1], bob.email[:-1]):  # nothing matched in part
        missing = await alice.http.get("/v1/people", params={"email": nobody}, headers=alice.headers)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found"), nobody
    assert (await alice.http.get("/v1/people", params={"email": "a\x00b"}, headers=alice.headers)).status_code == 422
    assert (await alice.http.get("/v1/people", params={"email": bob.email})).status_code == 401


async def test_a_node_looks_nobody_up(stack: Stack) -> None:
    (alice,) = await members(stack, 1)
    owner = stack.bearer(await stack.register_and_login("owner-of-nodes@example.org", roles=["user", "provider"]))
    body = {"name": "edge", "capabilities": {"cpu_cores": 1, "memory_bytes": 2**30, "disk_bytes": 2**30,
                                             "arch": "x86_64", "os": "Linux"}}  # fmt: skip
    registered = await stack.http.post("/v1/nodes", json=body, headers=owner)
    assert registered.status_code == 201, registered.text
    node = {"Authorization": f"Bearer {registered.json()['credential']}"}
    refused = await stack.http.get("/v1/people", params={"email": alice.email}, headers=node)
    assert refused.status_code == 403
