"""The key directory through the gateway: devices publish X25519 public keys, senders claim
one-time prekeys, each handed out once."""

from __future__ import annotations

import asyncio
import base64
import os

from chat_driver import members
from gateway_stack import Stack


def public_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def test_prekeys_are_claimed_once_each_then_the_identity_key_alone(stack: Stack) -> None:
    alice, bob, carol = await members(stack, 3)
    identity, prekeys = public_key(), {key_id: public_key() for key_id in range(1, 4)}
    body = {"identity_key": identity, "prekeys": [{"key_id": k, "public_key": v} for k, v in prekeys.items()]}
    published = await alice.http.put("/v1/keys/devices/phone", json=body, headers=alice.headers)
    assert published.status_code == 200, published.text
    assert (published.json()["identity_key"], published.json()["prekeys_left"]) == (identity, 3)
    listed = (await bob.http.get(f"/v1/keys/users/{alice.id}", headers=bob.headers)).json()
    assert [(d["device_id"], d["prekeys_left"]) for d in listed["devices"]] == [("phone", 3)]

    claim = f"/v1/keys/users/{alice.id}/devices/phone/claim"
    claims = await asyncio.gather(
        *(claimer.http.post(claim, headers=claimer.headers) for claimer in (bob, carol, bob, carol))
    )
    prekeys_given = [c.json()["prekey"] for c in claims]
    handed = sorted(p["key_id"] for p in prekeys_given if p is not None)
    assert handed == [1, 2, 3]  # each once, to whoever came first
    assert prekeys_given.count(None) == 1  # then none are left: the identity key alone
    assert {c.json()["identity_key"] for c in claims} == {identity}
    assert all(prekeys[p["key_id"]] == p["public_key"] for p in prekeys_given if p is not None)


async def test_a_reinstalled_device_drops_its_old_prekeys(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    old = {"identity_key": public_key(), "prekeys": [{"key_id": 1, "public_key": public_key()}]}
    await alice.http.put("/v1/keys/devices/laptop", json=old, headers=alice.headers)
    again = {"identity_key": old["identity_key"], "prekeys": [{"key_id": 2, "public_key": public_key()}]}
    added = await alice.http.put("/v1/keys/devices/laptop", json=again, headers=alice.headers)
    assert added.json()["prekeys_left"] == 2
    new = {"identity_key": public_key(), "prekeys": [{"key_id": 7, "public_key": public_key()}]}
    replaced = await alice.http.put("/v1/keys/devices/laptop", json=new, headers=alice.headers)
    assert (replaced.json()["identity_key"], replaced.json()["prekeys_left"]) == (new["identity_key"], 1)
    claimed = await bob.http.post(f"/v1/keys/users/{alice.id}/devices/laptop/claim", headers=bob.headers)
    assert claimed.json()["prekey"]["key_id"] == 7


async def test_bad_keys_and_unknown_devices_are_refused(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    short = base64.b64encode(os.urandom(31)).decode()
    for bad in ({"identity_key": short}, {"identity_key": "not base64 at all, but 44 characters long!!!"},
                {"identity_key": public_key(), "prekeys": [{"key_id": -1, "public_key": public_key()}]}):  # fmt: skip
        refused = await alice.http.put("/v1/keys/devices/phone", json=bad, headers=alice.headers)
        assert refused.status_code == 422, refused.text
    assert (await bob.http.get(f"/v1/keys/users/{alice.id}", headers=bob.headers)).json()["devices"] == []
    missing = await bob.http.post(f"/v1/keys/users/{alice.id}/devices/phone/claim", headers=bob.headers)
    assert missing.status_code == 404
