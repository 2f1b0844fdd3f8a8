"""The key directory through the gateway: devices publish X25519 public keys and a prekey signed with
their Ed25519 signing key, senders claim one-time prekeys, each handed out once, and the signed prekey."""

from __future__ import annotations

import asyncio
import base64
import os

from chat_driver import members
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def signed_prekey(signer: Ed25519PrivateKey, key_id: int) -> dict[str, object]:
    prekey = os.urandom(32)
    return {"key_id": key_id, "public_key": b64(prekey), "signature": b64(signer.sign(prekey))}


def signing_key_of(signer: Ed25519PrivateKey) -> str:
    return b64(signer.public_key().public_bytes_raw())


def signature_holds(signing_key: str, signed: dict[str, object]) -> bool:
    """What a sender does with a claimed signed prekey before using it."""
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(signing_key)).verify(
            base64.b64decode(str(signed["signature"])), base64.b64decode(str(signed["public_key"]))
        )
    except InvalidSignature:
        return False
    return True


async def test_a_signed_prekey_is_handed_to_every_sender_and_outlives_the_one_time_prekeys(stack: Stack) -> None:
    alice, bob, carol = await members(stack, 3)
    signer = Ed25519PrivateKey.generate()
    identity, signing_key, medium_term = public_key(), signing_key_of(signer), signed_prekey(signer, 1)
    body = {
        "identity_key": identity, "signing_key": signing_key, "signed_prekey": medium_term,
        "prekeys": [{"key_id": 10, "public_key": public_key()}],
    }  # fmt: skip
    published = await alice.http.put("/v1/keys/devices/phone", json=body, headers=alice.headers)
    assert published.status_code == 200, published.text
    assert (published.json()["signing_key"], published.json()["signed_prekey"]) == (signing_key, medium_term)
    listed = (await bob.http.get(f"/v1/keys/users/{alice.id}", headers=bob.headers)).json()["devices"]
    assert [(d["signing_key"], d["signed_prekey"]) for d in listed] == [(signing_key, medium_term)]

    claim = f"/v1/keys/users/{alice.id}/devices/phone/claim"
    first, second = [(await c.http.post(claim, headers=c.headers)).json() for c in (bob, carol)]
    assert first["prekey"]["key_id"] == 10
    assert second["prekey"] is None  # the one-time prekeys ran out: the signed prekey is still there
    for claimed in (first, second):
        assert (claimed["signing_key"], claimed["signed_prekey"]) == (signing_key, medium_term)
        assert signature_holds(claimed["signing_key"], claimed["signed_prekey"])

    rotated = signed_prekey(signer, 2)
    body = {"identity_key": identity, "signing_key": signing_key, "signed_prekey": rotated}
    assert (await alice.http.put("/v1/keys/devices/phone", json=body, headers=alice.headers)).status_code == 200
    refill = {"identity_key": identity, "prekeys": [{"key_id": 11, "public_key": public_key()}]}
    kept = (await alice.http.put("/v1/keys/devices/phone", json=refill, headers=alice.headers)).json()
    assert (kept["signing_key"], kept["signed_prekey"], kept["prekeys_left"]) == (signing_key, rotated, 1)


async def test_a_signed_prekey_not_signed_by_its_signing_key_is_refused_and_changes_nothing(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    signer, impostor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    identity = public_key()
    good = {"identity_key": identity, "signing_key": signing_key_of(signer), "signed_prekey": signed_prekey(signer, 1)}
    assert (await alice.http.put("/v1/keys/devices/phone", json=good, headers=alice.headers)).status_code == 200
    forged = {**good, "signed_prekey": signed_prekey(impostor, 2)}
    swapped = {**good, "signed_prekey": {**good["signed_prekey"], "public_key": public_key()}}  # type: ignore[dict-item]
    for bad in (forged, swapped):
        refused = await alice.http.put("/v1/keys/devices/phone", json=bad, headers=alice.headers)
        assert (refused.status_code, refused.json()["code"]) == (422, "invalid_signature")
    unsigned = {"identity_key": identity, "signed_prekey": signed_prekey(signer, 3)}  # no signing key with it
    assert (await alice.http.put("/v1/keys/devices/phone", json=unsigned, headers=alice.headers)).status_code == 422
    device = (await bob.http.get(f"/v1/keys/users/{alice.id}", headers=bob.headers)).json()["devices"][0]
    assert device["signed_prekey"] == good["signed_prekey"]


async def test_another_signing_key_is_another_device(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    old_signer, new_signer = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    identity = public_key()
    old = {
        "identity_key": identity, "signing_key": signing_key_of(old_signer),
        "signed_prekey": signed_prekey(old_signer, 1), "prekeys": [{"key_id": 1, "public_key": public_key()}],
    }  # fmt: skip
    await alice.http.put("/v1/keys/devices/phone", json=old, headers=alice.headers)
    new = {"identity_key": identity, "signing_key": signing_key_of(new_signer)}
    replaced = (await alice.http.put("/v1/keys/devices/phone", json=new, headers=alice.headers)).json()
    assert (replaced["signing_key"], replaced["signed_prekey"], replaced["prekeys_left"]) == (
        new["signing_key"],
        None,
        0,
    )
    claimed = (await bob.http.post(f"/v1/keys/users/{alice.id}/devices/phone/claim", headers=bob.headers)).json()
    assert (claimed["prekey"], claimed["signed_prekey"]) == (None, None)  # nothing of the old device is handed out
