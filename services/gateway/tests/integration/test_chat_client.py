"""BitChat from the client library and ``fogctl chat``, against a gateway served on a real port
with the real messaging service behind it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest
from chat_driver import Member, members, start_direct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gateway_stack import Stack
from typer.testing import CliRunner
from websockets.exceptions import ConnectionClosedError

from fog_client import ApiError, FogClient, Prekey, SignedPrekey
from fogctl.__main__ import app
from fogctl.session import Session

runner = CliRunner()


async def fogctl(*args: str) -> tuple[int, str, str]:
    # fogctl runs its own event loop: it gets a thread of its own.
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.stdout, result.stderr


def signed_in(url: str, member: Member) -> FogClient:
    assert member.tokens is not None
    return FogClient(url, access_token=member.tokens["access_token"], refresh_token=member.tokens["refresh_token"])


def use_session(url: str, member: Member) -> None:
    assert member.tokens is not None
    Session(url, f"{member.id}@example.org", member.tokens["access_token"], member.tokens["refresh_token"]).save()


async def test_the_client_sends_reads_syncs_and_runs_groups(stack: Stack) -> None:
    url = await stack.serve_gateway()
    alice, bob, carol = await members(stack, 3)
    async with signed_in(url, alice) as a, signed_in(url, bob) as b:
        first = await a.send_direct(bob.id, "hi", client_msg_id="c-1")
        assert (await a.send_direct(bob.id, "hi", client_msg_id="c-1")).id == first.id
        reply = await b.send_message(first.conversation_id, "hello", reply_to_seq=1, device_id="phone",
                                     clock={"phone": 1})  # fmt: skip
        assert (reply.seq, reply.reply_to_seq, reply.clock) == (2, 1, {"phone": 1})
        synced = await b.sync()
        assert [e.message.text for e in synced.entries if e.message] == ["hi", "hello"]
        assert (await b.sync(synced.next)).entries == []
        assert (await b.mark(first.conversation_id, 2)).read_seq == 2
        assert {r.member_id: r.read_seq for r in await a.receipts(first.conversation_id)} == {alice.id: 0, bob.id: 2}
        page = await a.list_messages(first.conversation_id, after_seq=1)
        assert [m.text for m in page.items] == ["hello"]
        group = await a.create_group("team", [bob.id])
        await a.add_member(group.id, carol.id)
        await a.transfer_group(group.id, bob.id)
        await a.remove_member(group.id, alice.id)  # leaving, as an admin now
        listed = {c.id: c for c in await b.list_conversations()}
        assert {m.member_id: m.role for m in listed[group.id].members} == {bob.id: "owner", carol.id: "member"}
        assert {m.member_id: m.email for m in listed[group.id].members} == {bob.id: bob.email, carol.id: carol.email}
        direct = await b.get_conversation(first.conversation_id)
        assert {m.member_id: m.email for m in direct.members} == {alice.id: alice.email, bob.id: bob.email}
        with pytest.raises(ApiError) as refused:
            await a.send_message(group.id, "still here?")
        assert refused.value.status == 404
        identity, prekey = base64.b64encode(b"i" * 32).decode(), base64.b64encode(b"p" * 32).decode()
        assert (await a.publish_keys("phone", identity, {5: prekey})).prekeys_left == 1
        assert [d.device_id for d in await b.user_keys(alice.id)] == ["phone"]
        claimed = await b.claim_prekey(alice.id, "phone")
        assert (claimed.identity_key, claimed.prekey) == (identity, Prekey(key_id=5, public_key=prekey))
        assert (await b.claim_prekey(alice.id, "phone")).prekey is None
        signer, medium_term = Ed25519PrivateKey.generate(), os.urandom(32)
        signed = SignedPrekey(
            key_id=1, public_key=base64.b64encode(medium_term).decode(),
            signature=base64.b64encode(signer.sign(medium_term)).decode(),
        )  # fmt: skip
        signing_key = base64.b64encode(signer.public_key().public_bytes_raw()).decode()
        await a.publish_keys("phone", identity, signing_key=signing_key, signed_prekey=signed)
        claimed = await b.claim_prekey(alice.id, "phone")
        assert (claimed.signing_key, claimed.signed_prekey, claimed.prekey) == (signing_key, signed, None)

        data = bytes(range(256)) * 3000  # two chunks
        announced = {"name": "t.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        started = await alice.http.post(
            f"/v1/conversations/{first.conversation_id}/files", json=announced, headers=alice.headers
        )
        partial = started.json()["id"]  # an upload that broke off before any chunk arrived
        uploaded = await a.upload_file(first.conversation_id, "t.bin", data, file_id=partial)
        assert (uploaded.id, uploaded.status) == (partial, "complete")
        shared = [e for e in (await b.sync(synced.next)).entries if e.kind == "file"]
        assert [(e.file.id, e.file.name, e.file.size) for e in shared if e.file] == [(partial, "t.bin", len(data))]
        assert await b.download_file(partial) == data
        assert await b.download_file(partial, first=10, last=19) == data[10:20]
        other = await a.upload_file(first.conversation_id, "u.bin", data[:10])
        page = await b.list_files(first.conversation_id, limit=1)
        assert ([f.id for f in page.items], page.next_cursor is not None) == ([other.id], True)
        assert [f.id async for f in b.iter_files(first.conversation_id, limit=1)] == [other.id, partial]
        await a.delete_file(other.id)
        dropped = await a.start_upload(first.conversation_id, "dropped.bin", data)
        assert (dropped.status, dropped.missing) == ("uploading", [0, 1])
        assert [u.id for u in await a.list_uploads()] == [dropped.id]
        await a.cancel_upload(dropped.id)
        assert await a.list_uploads() == []
        with pytest.raises(ApiError) as gone:
            await a.file_info(dropped.id)
        assert gone.value.status == 404
        with pytest.raises(ApiError) as kept:
            await a.cancel_upload(partial)  # complete: cancelling leaves it
        assert (kept.value.status, kept.value.code) == (409, "complete")
        assert await b.download_file(partial) == data
        await a.delete_file(partial)
        with pytest.raises(ApiError) as deleted:
            await b.download_file(partial)
        assert deleted.value.status == 404
        gone_entries = [e for e in (await b.sync(synced.next)).entries if e.kind == "file_deleted"]
        assert [e.file.id for e in gone_entries if e.file] == [other.id, partial]


async def test_fogctl_chat_send_read_and_groups(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = await stack.serve_gateway()
    alice, bob = await members(stack, 2)
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    monkeypatch.setenv("COLUMNS", "200")
    use_session(url, alice)
    code, out, err = await fogctl("chat", "send", "--to", bob.email.upper(), "hello from the shell", "--json")
    assert code == 0, err  # by their address, whatever its case
    conversation = json.loads(out)["conversation_id"]
    code, _, err = await fogctl("chat", "send", "--to", "nobody@example.org", "hello?")
    assert code == 1
    assert "404" in err
    code, out, err = await fogctl("chat", "groups", "create", "o" * 101, "--member", bob.id)
    assert code == 1
    assert "422 Invalid request" in err
    assert "name: String should have at most 100 characters" in err  # which field, and why
    code, out, err = await fogctl("chat", "groups", "create", "ops", "--member", bob.id)
    assert code == 0, err
    group = out.split()[2]
    code, out, err = await fogctl("chat", "groups", "role", group, bob.email, "admin")
    assert code == 0, err
    assert out.strip() == f"{bob.email} is now admin of {group}"
    code, _, err = await fogctl("chat", "groups", "role", group, bob.id, "owner")
    assert code == 2  # `transfer` hands a group over
    assert "neither admin nor member" in err

    use_session(url, bob)
    code, out, err = await fogctl("chat", "read")
    assert code == 0, err
    assert conversation in out
    assert group in out
    assert f"{alice.email} (owner)" in out  # members by address, with their roles
    assert f"{bob.email} (admin)" in out
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    unread = {row[0]: row[-1] for row in rows if row[0]}
    assert unread == {conversation: "1", group: "-"}  # alice's message not read yet; nothing said in the group
    code, out, err = await fogctl("chat", "read", conversation, "--keep-unread")
    assert code == 0, err
    assert out.strip().endswith(f"{alice.email}: hello from the shell")
    code, out, err = await fogctl("chat", "read", "--json")
    assert {c["id"]: c["unread"] for c in json.loads(out)["items"]} == {conversation: 1, group: 0}
    code, out, err = await fogctl("chat", "read", conversation)  # reading marks what it shows read
    assert code == 0, err
    code, out, err = await fogctl("chat", "read", "--json")
    assert {c["id"]: (c["read_seq"], c["unread"]) for c in json.loads(out)["items"]}[conversation] == (1, 0)
    code, out, err = await fogctl("chat", "send", "--conversation", group, "on it", "--reply-to", "9")
    assert code == 1
    assert "no message 9" in err
    code, out, err = await fogctl("chat", "send", "--conversation", group, "on it")
    assert code == 0, err
    assert out.startswith("Sent #1 to ")
    code, out, err = await fogctl("chat", "groups", "--json")
    assert code == 0, err
    assert [g["id"] for g in json.loads(out)["items"]] == [group]
    code, out, err = await fogctl("chat", "groups", "leave", group)
    assert code == 0, err
    code, out, err = await fogctl("chat", "sync")
    assert code == 0, err
    kinds = [json.loads(line).get("kind") for line in out.splitlines()[:-1]]
    assert kinds == ["message", "group_created", "role_changed", "receipt", "message", "member_removed"]
    assert json.loads(out.splitlines()[-1])["more"] is False
    code, out, err = await fogctl("chat", "send", "--conversation", conversation, "helo")
    assert code == 0, err
    code, out, err = await fogctl("chat", "edit", conversation, "2", "hello")
    assert code == 0, err
    assert out.strip().endswith(f"{bob.id}: hello (edited)")
    code, out, err = await fogctl("chat", "delete", conversation, "2")
    assert code == 0, err
    assert out.strip().endswith(f"{bob.id}: (deleted)")
    code, _, err = await fogctl("chat", "edit", conversation, "1", "not mine")
    assert code == 1  # alice's message
    assert "refused: 403" in err
    code, _, err = await fogctl("chat", "send", "--to", bob.id, "--conversation", group, "both")
    assert code != 0

    sent = tmp_path / "report.txt"
    sent.write_bytes(b"all systems nominal\n" * 50_000)  # two chunks
    code, out, err = await fogctl("chat", "upload", conversation, str(sent))
    assert code == 0, err
    file_id = out.split()[-1]
    assert f"Uploading as file {file_id}" in err  # said first, for a --resume after a drop
    code, out, err = await fogctl("chat", "files", conversation, "--json")
    assert code == 0, err
    assert [(f["id"], f["name"], f["size"]) for f in json.loads(out)["items"]] == [(file_id, "report.txt", 1_000_000)]
    code, out, err = await fogctl("chat", "files", conversation)
    assert code == 0, err
    assert file_id in out
    assert "976.6 KiB" in out
    assert bob.email in out  # who sent it, by address
    received = tmp_path / "received.txt"
    code, out, err = await fogctl("chat", "download", file_id, "--output", str(received))
    assert code == 0, err
    assert received.read_bytes() == sent.read_bytes()
    code, out, err = await fogctl("chat", "cancel-upload", file_id)
    assert code == 1
    assert "complete" in err  # cancelling is for uploads under way: a complete file stays
    assert (await bob.http.get(f"/v1/files/{file_id}", headers=bob.headers)).status_code == 200
    async with signed_in(url, bob) as b:  # the saved session's user
        dropped = await b.start_upload(conversation, "dropped.txt", sent.read_bytes())
    code, out, err = await fogctl("chat", "uploads", "--json")
    assert code == 0, err
    assert [u["id"] for u in json.loads(out)["items"]] == [dropped.id]
    code, out, err = await fogctl("chat", "uploads")
    assert code == 0, err
    assert dropped.id in out
    assert "2 of 2" in out  # both chunks missing
    code, out, err = await fogctl("chat", "cancel-upload", dropped.id)
    assert code == 0, err
    code, out, err = await fogctl("chat", "upload", conversation, str(sent), "--resume", dropped.id)
    assert code == 1
    assert "no such file" in err
    code, out, err = await fogctl("chat", "delete-file", file_id)
    assert code == 0, err
    assert out.strip() == f"Deleted file {file_id}"
    assert (await bob.http.get(f"/v1/files/{file_id}/content", headers=bob.headers)).status_code == 404


async def test_fogctl_chat_read_opens_at_the_first_unread_message(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await stack.serve_gateway()
    alice, bob = await members(stack, 2)
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    conversation = await start_direct(alice, bob, "one")
    use_session(url, bob)
    code, out, err = await fogctl("chat", "read", conversation)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["#1"]
    for text in ("two", "three", "four"):
        await alice.send(conversation, text)
    code, out, err = await fogctl("chat", "read", conversation, "--limit", "2")  # from the first unread on
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["#2", "#3"]
    assert f"More after #3: fogctl chat read {conversation} --after 3" in err
    code, out, err = await fogctl("chat", "read", conversation, "--limit", "2")
    assert [line.split()[0] for line in out.splitlines()] == ["#4"]
    code, out, err = await fogctl("chat", "read", conversation, "--limit", "2")  # all read: the latest
    assert [line.split()[0] for line in out.splitlines()] == ["#3", "#4"]
    code, out, err = await fogctl("chat", "read", conversation, "--after", "0", "--limit", "1")
    assert [line.split()[0] for line in out.splitlines()] == ["#1"]

    await alice.send(conversation, "five")
    code, _, err = await fogctl("chat", "mark-read")
    assert code == 0, err
    assert "Marked 1 conversation read." in err
    code, out, err = await fogctl("chat", "read", "--json")
    assert [c["unread"] for c in json.loads(out)["items"]] == [0]
    code, out, err = await fogctl("chat", "search", "THREE")
    assert code == 0, err
    assert out.strip().startswith(f"{conversation} #3 ")
    assert out.strip().endswith(f"{alice.email}: three")  # the sender by address
    code, out, err = await fogctl("chat", "search", "e", "--limit", "2", "--json")
    assert [m["text"] for m in json.loads(out)["items"]] == ["five", "three"]
    assert json.loads(out)["more"] is True  # "one" too


async def test_a_live_stream_dropped_and_resumed_from_its_token_loses_and_repeats_nothing(stack: Stack) -> None:
    url = await stack.serve_gateway()
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob, "0")
    seen: list[int] = []
    token = None

    async def flood() -> None:
        for index in range(1, 21):
            await alice.send(conversation, str(index))

    async with signed_in(url, bob) as b:
        sending = asyncio.create_task(flood())
        async with contextlib.aclosing(b.live()) as stream:
            async for page in stream:
                seen += [e.message.seq for e in page.entries if e.message]
                token = page.next
                if len(seen) >= 2:
                    break  # the connection drops while messages keep coming
        await sending
        async with contextlib.aclosing(b.live(token)) as stream:
            async for page in stream:
                seen += [e.message.seq for e in page.entries if e.message]
                if seen[-1] == 21:
                    break
    assert seen == list(range(1, 22))


async def test_a_live_stream_needs_a_signed_in_person(stack: Stack) -> None:
    url = await stack.serve_gateway()
    async with FogClient(url) as anonymous, contextlib.aclosing(anonymous.live()) as stream:
        with pytest.raises(ConnectionClosedError) as closed:
            await anext(stream)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
