"""BitChat files through the gateway, stored in the real JetStream object store: chunked,
resumable uploads checked chunk by chunk and whole, downloads with Range, members only."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from chat_driver import Member, members, start_direct, sync_all
from gateway_stack import Stack
from nats.aio.client import Client as NatsClient
from nats.js.errors import ObjectNotFoundError

from fog_shared.bus.topology import FILES_BUCKET
from fog_shared.commands.messaging import CHUNK_BYTES
from fog_shared.testing.waiting import wait_until

MIB = 1024 * 1024


async def announce(member: Member, conversation: str, data: bytes, name: str = "data.bin") -> dict[str, Any]:
    body = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    started = await member.http.post(f"/v1/conversations/{conversation}/files", json=body, headers=member.headers)
    assert started.status_code == 201, started.text
    return dict(started.json())


async def put_chunk(member: Member, file_id: str, index: int, chunk: bytes, sha256: str | None = None) -> Any:
    headers = {**member.headers, "X-Chunk-SHA256": sha256 or hashlib.sha256(chunk).hexdigest()}
    return await member.http.put(f"/v1/files/{file_id}/chunks/{index}", content=chunk, headers=headers)


def chunk_of(data: bytes, index: int) -> bytes:
    return data[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]


async def test_a_50_mib_file_resumed_after_a_drop_downloads_whole_and_in_ranges(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob)
    data = os.urandom(50 * MIB)
    announced = await announce(alice, conversation, data, "big.bin")
    file_id, chunks = announced["id"], announced["chunks"]
    assert (chunks, announced["missing"]) == (100, list(range(100)))
    for index in range(chunks):
        if index != 42:  # the connection dropped while this one was on its way
            sent = await put_chunk(alice, file_id, index, chunk_of(data, index))
            assert sent.status_code == 200, sent.text
    assert (await alice.http.get(f"/v1/files/{file_id}", headers=alice.headers)).json()["missing"] == [42]
    early = await alice.http.post(f"/v1/files/{file_id}/complete", headers=alice.headers)
    assert (early.status_code, early.json()["code"]) == (409, "incomplete")
    assert (await put_chunk(alice, file_id, 42, chunk_of(data, 42))).json()["missing"] == []
    assert (await put_chunk(alice, file_id, 7, chunk_of(data, 7))).status_code == 200  # a resend replaces
    done = await alice.http.post(f"/v1/files/{file_id}/complete", headers=alice.headers)
    assert (done.status_code, done.json()["status"]) == (200, "complete")

    whole = await bob.http.get(f"/v1/files/{file_id}/content", headers=bob.headers)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == hashlib.sha256(data).hexdigest()
    across = (CHUNK_BYTES - 10, CHUNK_BYTES + 9)  # the end of chunk 0 and the start of chunk 1
    for asked, first, last in (
        (f"bytes={across[0]}-{across[1]}", *across), ("bytes=-100", len(data) - 100, len(data) - 1),
        (f"bytes={len(data) - 5}-", len(data) - 5, len(data) - 1),
    ):  # fmt: skip
        part = await bob.http.get(f"/v1/files/{file_id}/content", headers={**bob.headers, "Range": asked})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
        assert part.content == data[first : last + 1]


async def test_corrupted_chunks_outsiders_and_bad_ranges_are_refused(stack: Stack) -> None:
    alice, bob, eve = await members(stack, 3)
    conversation = await start_direct(alice, bob)
    _, token = await sync_all(bob)
    data = os.urandom(CHUNK_BYTES + 1000)
    file_id = (await announce(alice, conversation, data, "notes.txt"))["id"]
    corrupt = await put_chunk(alice, file_id, 0, chunk_of(data, 0), sha256=hashlib.sha256(b"other").hexdigest())
    assert (corrupt.status_code, corrupt.json()["code"]) == (422, "chunk_corrupt")
    assert (await put_chunk(alice, file_id, 1, data[:10])).status_code == 422  # the wrong length
    assert (await put_chunk(bob, file_id, 0, chunk_of(data, 0))).status_code == 404  # not bob's upload
    assert (await alice.http.get(f"/v1/files/{file_id}", headers=alice.headers)).json()["missing"] == [0, 1]
    for index in (0, 1):
        assert (await put_chunk(alice, file_id, index, chunk_of(data, index))).status_code == 200
    assert (await alice.http.post(f"/v1/files/{file_id}/complete", headers=alice.headers)).status_code == 200

    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        assert (await eve.http.get(path, headers=eve.headers)).status_code == 404  # not her conversation
    past_the_end = await bob.http.get(
        f"/v1/files/{file_id}/content", headers={**bob.headers, "Range": f"bytes={len(data)}-"}
    )
    assert (past_the_end.status_code, past_the_end.headers["content-range"]) == (416, f"bytes */{len(data)}")
    entries, _ = await sync_all(bob, since=token)
    assert [(e["kind"], e["file"]["name"]) for e in entries] == [("file", "notes.txt")]


async def test_a_whole_file_that_does_not_match_its_sha256_starts_over(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob)
    data = os.urandom(1000)
    body = {"name": "x", "size": len(data), "sha256": hashlib.sha256(b"something else").hexdigest()}
    started = await alice.http.post(f"/v1/conversations/{conversation}/files", json=body, headers=alice.headers)
    file_id = started.json()["id"]
    assert (await put_chunk(alice, file_id, 0, data)).status_code == 200
    mismatch = await alice.http.post(f"/v1/files/{file_id}/complete", headers=alice.headers)
    assert (mismatch.status_code, mismatch.json()["code"]) == (422, "checksum_mismatch")
    after = (await alice.http.get(f"/v1/files/{file_id}", headers=alice.headers)).json()
    assert (after["status"], after["missing"]) == ("uploading", [0])
    assert (await bob.http.get(f"/v1/files/{file_id}/content", headers=bob.headers)).status_code == 404


async def test_an_upload_under_way_is_cancelled_by_its_uploader_alone_and_each_member_has_16_at_most(
    stack: Stack, nats_client: NatsClient
) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob)
    data = os.urandom(1000)
    cancelled = (await announce(alice, conversation, data))["id"]
    assert (await put_chunk(alice, cancelled, 0, data)).status_code == 200
    assert (await bob.http.delete(f"/v1/files/{cancelled}", headers=bob.headers)).status_code == 404  # not his
    chunks = await nats_client.jetstream().object_store(FILES_BUCKET)
    assert (await chunks.get(f"{cancelled}/0")).data == data
    assert (await alice.http.delete(f"/v1/files/{cancelled}", headers=alice.headers)).status_code == 204
    with pytest.raises(ObjectNotFoundError):  # its chunk left the object store with it
        await chunks.get(f"{cancelled}/0")
    assert (await alice.http.get(f"/v1/files/{cancelled}", headers=alice.headers)).status_code == 404
    assert (await put_chunk(alice, cancelled, 0, data)).status_code == 404
    assert (await alice.http.post(f"/v1/files/{cancelled}/complete", headers=alice.headers)).status_code == 404

    whole = (await announce(alice, conversation, data))["id"]
    assert (await put_chunk(alice, whole, 0, data)).status_code == 200
    assert (await alice.http.post(f"/v1/files/{whole}/complete", headers=alice.headers)).status_code == 200

    under_way = [(await announce(alice, conversation, data))["id"] for _ in range(16)]
    listed = (await alice.http.get("/v1/uploads", headers=alice.headers)).json()["items"]
    assert [u["id"] for u in listed] == under_way[::-1]  # newest first; neither the cancelled nor the complete
    assert all((u["status"], u["missing"]) == ("uploading", [0]) for u in listed)
    assert (await bob.http.get("/v1/uploads", headers=bob.headers)).json()["items"] == []
    body = {"name": "17th", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    refused = await alice.http.post(f"/v1/conversations/{conversation}/files", json=body, headers=alice.headers)
    assert (refused.status_code, refused.headers["content-type"]) == (409, "application/problem+json")
    assert refused.json()["code"] == "too_many_uploads"
    assert (await announce(bob, conversation, data))["status"] == "uploading"  # Bob's own count
    assert (await alice.http.delete(f"/v1/files/{under_way[0]}", headers=alice.headers)).status_code == 204
    assert (await announce(alice, conversation, data, "17th"))["status"] == "uploading"


async def uploaded(member: Member, conversation: str, data: bytes, name: str) -> str:
    file_id = str((await announce(member, conversation, data, name))["id"])
    assert (await put_chunk(member, file_id, 0, data)).status_code == 200
    assert (await member.http.post(f"/v1/files/{file_id}/complete", headers=member.headers)).status_code == 200
    return file_id


async def test_a_complete_file_is_deleted_by_its_uploader_or_a_groups_admins_and_its_members_are_told(
    stack: Stack, nats_client: NatsClient
) -> None:
    owner, admin, carol, outsider = await members(stack, 4)
    created = await owner.http.post(
        "/v1/groups", json={"name": "crew", "member_ids": [admin.id, carol.id]}, headers=owner.headers
    )
    group = created.json()["id"]
    role = await owner.http.put(f"/v1/groups/{group}/members/{admin.id}/role", json={"role": "admin"},
                                headers=owner.headers)  # fmt: skip
    assert role.status_code == 200, role.text
    data = os.urandom(1000)
    carols, owners = await uploaded(carol, group, data, "carol.txt"), await uploaded(owner, group, data, "owner.txt")
    _, since = await sync_all(carol)
    chunks = await nats_client.jetstream().object_store(FILES_BUCKET)

    assert (await outsider.http.delete(f"/v1/files/{carols}", headers=outsider.headers)).status_code == 404
    refused = await carol.http.delete(f"/v1/files/{owners}", headers=carol.headers)  # a member's, not an admin's
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert (await carol.http.delete(f"/v1/files/{carols}", headers=carol.headers)).status_code == 204
    assert (await admin.http.delete(f"/v1/files/{owners}", headers=admin.headers)).status_code == 204  # moderation

    for file_id in (carols, owners):
        for member in (owner, admin, carol):
            assert (await member.http.get(f"/v1/files/{file_id}", headers=member.headers)).status_code == 404
            content = await member.http.get(f"/v1/files/{file_id}/content", headers=member.headers)
            assert content.status_code == 404
        with pytest.raises(ObjectNotFoundError):  # its bytes left the object store with it
            await chunks.get(f"{file_id}/0")
        assert (await carol.http.delete(f"/v1/files/{file_id}", headers=carol.headers)).status_code == 404
    told, _ = await sync_all(carol, since)
    deleted = [(e["kind"], e["file"]["id"], e["file"]["name"]) for e in told]
    assert deleted == [("file_deleted", carols, "carol.txt"), ("file_deleted", owners, "owner.txt")]
    root = stack.bearer(await stack.admin())

    async def announced() -> list[dict[str, Any]] | None:  # once the outbox relay has published it
        events = (await owner.http.get("/v1/admin/events", params={"aggregate_id": owners}, headers=root)).json()
        return [e["data"] for e in events["items"] if e["type"] == "messaging.file.deleted.v1"] or None

    gone = await wait_until(announced, what="file.deleted on the bus")
    assert [(e["uploaded_by"], e["deleted_by"], sorted(e["audience"])) for e in gone] == [
        (owner.id, admin.id, sorted([owner.id, admin.id, carol.id]))
    ]


async def test_a_conversations_complete_files_are_listed_newest_first_a_page_at_a_time(stack: Stack) -> None:
    alice, bob, eve = await members(stack, 3)
    conversation = await start_direct(alice, bob)
    elsewhere = await start_direct(alice, eve)
    data = os.urandom(1000)
    sent = [await uploaded(alice, conversation, data, "a.txt"), await uploaded(bob, conversation, data, "b.txt")]
    sent += [await uploaded(alice, conversation, data, "c.txt"), await uploaded(bob, conversation, data, "d.txt")]
    await uploaded(alice, elsewhere, data, "not-here.txt")
    await announce(alice, conversation, data, "under-way.txt")  # not complete: not listed
    assert (
        await bob.http.delete(f"/v1/files/{sent[1]}", headers=bob.headers)
    ).status_code == 204  # deleted: not listed
    listed = f"/v1/conversations/{conversation}/files"

    first = await bob.http.get(listed, params={"limit": 2}, headers=bob.headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [(f["id"], f["name"], f["status"]) for f in page["items"]] == [
        (sent[3], "d.txt", "complete"), (sent[2], "c.txt", "complete")
    ]  # fmt: skip
    rest = (await bob.http.get(listed, params={"limit": 2, "cursor": page["next_cursor"]}, headers=bob.headers)).json()
    assert ([f["id"] for f in rest["items"]], rest["next_cursor"]) == ([sent[0]], None)
    whole = (await alice.http.get(listed, headers=alice.headers)).json()
    assert [f["id"] for f in whole["items"]] == [sent[3], sent[2], sent[0]]

    outsider = await eve.http.get(listed, headers=eve.headers)
    assert (outsider.status_code, outsider.json()["code"]) == (404, "not_found")
    forged = await bob.http.get(listed, params={"cursor": "not-a-cursor"}, headers=bob.headers)
    assert (forged.status_code, forged.json()["code"]) == (400, "invalid_cursor")
    assert (await bob.http.get(listed, params={"limit": 201}, headers=bob.headers)).status_code == 422
