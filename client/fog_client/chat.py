"""BitChat calls of :class:`~fog_client.FogClient`: conversations, messages, groups, receipts, sync.

Members are named by member id: a user's id, or ``node:<node id>`` for a node.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field
from websockets.asyncio.client import ClientConnection

from fog_client.errors import ApiError
from fog_client.paths import segment as _segment


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Message(_Reply):
    id: str
    conversation_id: str
    #: the message's number in its conversation: 1, 2, 3, … without gaps
    seq: int
    sender_id: str
    #: None once deleted
    text: str | None
    client_msg_id: str
    reply_to_seq: int | None = None
    device_id: str | None = None
    clock: dict[str, int] | None = None
    #: seqs of earlier messages written concurrently with this one (by their vector clocks)
    concurrent_with: list[int] = Field(default_factory=list)
    sent_at: datetime
    edited_at: datetime | None = None
    deleted_at: datetime | None = None


class MessagePage(_Reply):
    items: list[Message]
    more: bool


class ConversationMember(_Reply):
    member_id: str
    role: str
    #: a person's e-mail address; None for a node (or from an older gateway)
    email: str | None = None


#: where the gateway stops counting a conversation's unread messages ("1000+")
UNREAD_CAP = 1000


class Conversation(_Reply):
    id: str
    kind: Literal["direct", "group"]
    name: str | None = None
    last_seq: int
    members: list[ConversationMember]
    created_at: datetime
    #: your read mark, and how many messages of others after it you have not read (counted up to 1000;
    #: 0 from a gateway older than these fields)
    read_seq: int = 0
    unread: int = 0


class Receipt(_Reply):
    member_id: str
    delivered_seq: int
    read_seq: int


class MemberChange(_Reply):
    member_id: str
    role: str | None = None
    by: str


class FileSummary(_Reply):
    """A file a sync entry names: download it with :meth:`ChatCalls.download_file`."""

    id: str
    name: str
    size: int
    sha256: str
    uploaded_by: str


class SyncEntry(_Reply):
    position: int
    conversation_id: str
    kind: str
    message: Message | None = None
    member: MemberChange | None = None
    receipt: Receipt | None = None
    #: the file shared (``file``) or deleted (``file_deleted``)
    file: FileSummary | None = None
    at: datetime


class Gap(_Reply):
    since: str
    until: str


class Sync(_Reply):
    entries: list[SyncEntry]
    next: str
    #: changes were left out (too many, or past retention): see ``gap``, page back per conversation
    limited: bool
    gap: Gap | None = None
    #: more entries wait: sync again with ``next`` at once
    more: bool


class Prekey(_Reply):
    key_id: int
    public_key: str


class SignedPrekey(_Reply):
    key_id: int
    public_key: str
    #: Ed25519, by the device's signing key, over the 32 bytes of ``public_key`` (base64)
    signature: str


class DeviceKeys(_Reply):
    device_id: str
    identity_key: str
    signing_key: str | None = None
    signed_prekey: SignedPrekey | None = None
    prekeys_left: int
    updated_at: datetime


class ClaimedPrekey(_Reply):
    user_id: str
    device_id: str
    identity_key: str
    signing_key: str | None = None
    #: check its signature with the signing key you trust for the device before using it
    signed_prekey: SignedPrekey | None = None
    #: None when the device has no one-time prekey left
    prekey: Prekey | None = None


class FileInfo(_Reply):
    id: str
    conversation_id: str
    name: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int
    #: chunks not received yet
    missing: list[int] = Field(default_factory=list)
    status: Literal["uploading", "complete"]
    uploaded_by: str
    created_at: datetime
    completed_at: datetime | None = None


class Person(_Reply):
    """Someone to message: ``user_id`` is their member id."""

    user_id: str
    email: str


class FilePage(_Reply):
    """A conversation's complete files, the last completed first; ``next_cursor`` is None on the last page."""

    items: list[FileInfo]
    next_cursor: str | None = None


class ChatCalls:
    """The chat calls; :class:`~fog_client.FogClient` provides ``_call`` and ``_handshake``."""

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        params: Any = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        raise NotImplementedError

    async def _handshake(self, path: str) -> ClientConnection:
        raise NotImplementedError

    async def send_message(
        self,
        conversation_id: str,
        text: str,
        *,
        client_msg_id: str | None = None,
        reply_to_seq: int | None = None,
        device_id: str | None = None,
        clock: Mapping[str, int] | None = None,
    ) -> Message:
        """Send to a conversation. Retrying with the same ``client_msg_id`` stores one message."""
        body = _message_body(text, client_msg_id, reply_to_seq, device_id, clock)
        path = f"/v1/conversations/{_segment(conversation_id)}/messages"
        return Message.model_validate_json((await self._call("POST", path, body)).content)

    async def send_direct(self, member_id: str, text: str, *, client_msg_id: str | None = None) -> Message:
        """Message a user (or your node, ``node:<id>``; a node: its owner); the conversation is made
        by the first message."""
        body = _message_body(text, client_msg_id, None, None, None)
        path = f"/v1/conversations/direct/{_segment(member_id)}/messages"
        return Message.model_validate_json((await self._call("POST", path, body)).content)

    async def list_conversations(self) -> list[Conversation]:
        items = (await self._call("GET", "/v1/conversations")).json()["items"]
        return [Conversation.model_validate(item) for item in items]

    async def get_conversation(self, conversation_id: str) -> Conversation:
        response = await self._call("GET", f"/v1/conversations/{_segment(conversation_id)}")
        return Conversation.model_validate_json(response.content)

    async def list_messages(
        self,
        conversation_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
        order: Literal["seq", "causal"] = "seq",
    ) -> MessagePage:
        """Messages you may read: forward after ``after_seq``, back before ``before_seq``."""
        given = {"after_seq": after_seq, "before_seq": before_seq, "limit": limit, "order": order}
        path = f"/v1/conversations/{_segment(conversation_id)}/messages"
        response = await self._call("GET", path, params={k: v for k, v in given.items() if v is not None})
        return MessagePage.model_validate_json(response.content)

    async def search_messages(
        self, text: str, *, conversation_id: str | None = None, limit: int | None = None
    ) -> MessagePage:
        """Messages you may read whose text holds ``text`` (any case), the newest first; in one conversation or
        across all of yours."""
        given = {"text": text, "conversation_id": conversation_id, "limit": limit}
        response = await self._call(
            "GET", "/v1/conversations/search", params={k: v for k, v in given.items() if v is not None}
        )
        return MessagePage.model_validate_json(response.content)

    async def edit_message(self, conversation_id: str, seq: int, text: str) -> Message:
        path = f"/v1/conversations/{_segment(conversation_id)}/messages/{seq}"
        return Message.model_validate_json((await self._call("PATCH", path, {"text": text})).content)

    async def delete_message(self, conversation_id: str, seq: int) -> Message:
        path = f"/v1/conversations/{_segment(conversation_id)}/messages/{seq}"
        return Message.model_validate_json((await self._call("DELETE", path)).content)

    async def mark(self, conversation_id: str, up_to_seq: int, kind: Literal["delivered", "read"] = "read") -> Receipt:
        """Say that everything up to ``up_to_seq`` reached you, or that you read it."""
        path = f"/v1/conversations/{_segment(conversation_id)}/receipts"
        response = await self._call("POST", path, {"kind": kind, "up_to_seq": up_to_seq})
        return Receipt.model_validate_json(response.content)

    async def receipts(self, conversation_id: str) -> list[Receipt]:
        items = (await self._call("GET", f"/v1/conversations/{_segment(conversation_id)}/receipts")).json()["items"]
        return [Receipt.model_validate(item) for item in items]

    async def create_group(self, name: str, member_ids: Sequence[str] = ()) -> Conversation:
        response = await self._call("POST", "/v1/groups", {"name": name, "member_ids": list(member_ids)})
        return Conversation.model_validate_json(response.content)

    async def add_member(
        self, group_id: str, member_id: str, role: Literal["admin", "member"] = "member"
    ) -> Conversation:
        path = f"/v1/groups/{_segment(group_id)}/members"
        response = await self._call("POST", path, {"member_id": member_id, "role": role})
        return Conversation.model_validate_json(response.content)

    async def remove_member(self, group_id: str, member_id: str) -> None:
        """Remove a member, or leave the group (your own id)."""
        await self._call("DELETE", f"/v1/groups/{_segment(group_id)}/members/{_segment(member_id)}")

    async def set_member_role(self, group_id: str, member_id: str, role: Literal["admin", "member"]) -> Conversation:
        """Make a member an admin, or an admin a member again (the group's owner)."""
        path = f"/v1/groups/{_segment(group_id)}/members/{_segment(member_id)}/role"
        return Conversation.model_validate_json((await self._call("PUT", path, {"role": role})).content)

    async def transfer_group(self, group_id: str, member_id: str) -> Conversation:
        path = f"/v1/groups/{_segment(group_id)}/owner"
        return Conversation.model_validate_json((await self._call("POST", path, {"member_id": member_id})).content)

    async def sync(self, since: str | None = None, *, limit: int | None = None, timeout_ms: int = 0) -> Sync:
        """What is new for you after ``since`` (from the start without one); with ``timeout_ms``,
        waits that long for something new. Keep ``next`` for the following call."""
        given = {"since": since, "limit": limit, "timeout_ms": timeout_ms or None}
        response = await self._call("GET", "/v1/sync", params={k: v for k, v in given.items() if v is not None})
        return Sync.model_validate_json(response.content)

    async def publish_keys(
        self,
        device_id: str,
        identity_key: str,
        prekeys: Mapping[int, str] | None = None,
        *,
        signing_key: str | None = None,
        signed_prekey: SignedPrekey | None = None,
    ) -> DeviceKeys:
        """Publish a device's X25519 identity key and one-time prekeys (key id → public key), and its Ed25519
        signing key and a prekey signed with it (over the prekey's 32 bytes); keys and signature in base64."""
        body: dict[str, Any] = {
            "identity_key": identity_key,
            "prekeys": [{"key_id": key_id, "public_key": key} for key_id, key in (prekeys or {}).items()],
        }
        if signing_key is not None:
            body["signing_key"] = signing_key
        if signed_prekey is not None:
            body["signed_prekey"] = signed_prekey.model_dump()
        response = await self._call("PUT", f"/v1/keys/devices/{_segment(device_id)}", body)
        return DeviceKeys.model_validate_json(response.content)

    async def find_person(self, email: str) -> Person:
        """Who signed up with ``email`` (exactly, whatever its case): their ``user_id`` is their member id.
        ``ApiError`` 404 when nobody did."""
        response = await self._call("GET", "/v1/people", params={"email": email})
        return Person.model_validate_json(response.content)

    async def user_keys(self, user_id: str) -> list[DeviceKeys]:
        devices = (await self._call("GET", f"/v1/keys/users/{_segment(user_id)}")).json()["devices"]
        return [DeviceKeys.model_validate(device) for device in devices]

    async def claim_prekey(self, user_id: str, device_id: str) -> ClaimedPrekey:
        """One of the device's one-time prekeys, handed to you only."""
        path = f"/v1/keys/users/{_segment(user_id)}/devices/{_segment(device_id)}/claim"
        return ClaimedPrekey.model_validate_json((await self._call("POST", path)).content)

    async def start_upload(self, conversation_id: str, name: str, data: bytes) -> FileInfo:
        """Announce a file to a conversation: its ``id`` is what to resume (``upload_file(..., file_id=)``) or
        cancel (``cancel_upload``) the upload with."""
        body = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        path = f"/v1/conversations/{_segment(conversation_id)}/files"
        return FileInfo.model_validate_json((await self._call("POST", path, body)).content)

    async def upload_file(
        self, conversation_id: str, name: str, data: bytes, *, file_id: str | None = None
    ) -> FileInfo:
        """Send a file in chunks and complete it. With the ``file_id`` of an upload that broke
        off (or that ``start_upload`` announced), only the chunks it is missing are sent. An upload
        that gets no chunk for a day is removed by the service."""
        info = (
            await self.start_upload(conversation_id, name, data) if file_id is None else await self.file_info(file_id)
        )
        for index in info.missing:
            chunk = data[index * info.chunk_size : (index + 1) * info.chunk_size]
            await self._call(
                "PUT", f"/v1/files/{_segment(info.id)}/chunks/{index}", raw=chunk,
                headers={"X-Chunk-SHA256": hashlib.sha256(chunk).hexdigest()},
            )  # fmt: skip
        completed = await self._call("POST", f"/v1/files/{_segment(info.id)}/complete")
        return FileInfo.model_validate_json(completed.content)

    async def list_uploads(self) -> list[FileInfo]:
        """Your uploads under way, newest first, each with the chunks it misses (resume with ``upload_file(...,
        file_id=)``, or ``cancel_upload``)."""
        items = (await self._call("GET", "/v1/uploads")).json()["items"]
        return [FileInfo.model_validate(item) for item in items]

    async def list_files(
        self, conversation_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> FilePage:
        """One page of the conversation's complete files; pass its ``next_cursor`` back as ``cursor``."""
        query = {k: v for k, v in (("cursor", cursor), ("limit", limit)) if v is not None}
        path = f"/v1/conversations/{_segment(conversation_id)}/files"
        return FilePage.model_validate_json((await self._call("GET", path, params=query)).content)

    async def iter_files(self, conversation_id: str, *, limit: int | None = None) -> AsyncGenerator[FileInfo, None]:
        """Every complete file of the conversation, the last completed first, following the cursors."""
        cursor: str | None = None
        while True:
            page = await self.list_files(conversation_id, cursor=cursor, limit=limit)
            for found in page.items:
                yield found
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel_upload(self, file_id: str) -> None:
        """Cancel an upload of yours under way: it is gone, its chunks too. A file that has completed is left
        as it is (``ApiError`` 409 ``complete``): ``delete_file`` deletes it."""
        if (await self.file_info(file_id)).status == "complete":
            detail = "the file is complete: delete it (delete_file) if that is what you mean"
            raise ApiError(409, "Conflict", detail, code="complete")
        await self._call("DELETE", f"/v1/files/{_segment(file_id)}")

    async def delete_file(self, file_id: str) -> None:
        """Delete a complete file: yours, or any in a group you own or administer. Its members are told
        (a ``file_deleted`` sync entry) and can no longer download it."""
        await self._call("DELETE", f"/v1/files/{_segment(file_id)}")

    async def file_info(self, file_id: str) -> FileInfo:
        return FileInfo.model_validate_json((await self._call("GET", f"/v1/files/{_segment(file_id)}")).content)

    async def download_file(self, file_id: str, *, first: int | None = None, last: int | None = None) -> bytes:
        """The file's bytes, or bytes ``first`` to ``last`` (inclusive) of it."""
        headers = {"Range": f"bytes={first or 0}-{'' if last is None else last}"} if first or last else None
        return (await self._call("GET", f"/v1/files/{_segment(file_id)}/content", headers=headers)).content

    async def live(self, since: str | None = None) -> AsyncGenerator[Sync, None]:
        """Your changes as they happen, as :class:`Sync` pages, until the connection ends.

        Keep the ``next`` of the last page you processed: reconnecting with it resumes with
        nothing lost and nothing repeated. A dropped connection raises
        ``websockets.exceptions.ConnectionClosedError``; close the iterator
        (``contextlib.aclosing``) to stop early."""
        path = "/v1/sync/live" + (f"?since={quote(since, safe='')}" if since else "")
        async with await self._handshake(path) as websocket:
            async for frame in websocket:
                update = json.loads(frame)
                if isinstance(update, dict) and update.get("type") == "sync":  # a newer gateway may add types
                    yield Sync.model_validate(update)


def _message_body(
    text: str,
    client_msg_id: str | None,
    reply_to_seq: int | None,
    device_id: str | None,
    clock: Mapping[str, int] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text, "client_msg_id": client_msg_id or uuid.uuid4().hex}
    extras = {"reply_to_seq": reply_to_seq, "device_id": device_id, "clock": dict(clock) if clock else None}
    body.update({k: v for k, v in extras.items() if v is not None})
    return body
