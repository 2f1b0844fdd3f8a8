"""Events published by the messaging service (stream ``EVT_MESSAGING``).

Bodies never carry message text (events are kept for days and replayed by operators; texts may
be ciphertext anyway): a consumer that needs the text asks the service. Each event names its
``audience``, the member ids who may see the change, so a gateway knows whose long-polls and
sockets to wake without asking. Members are user ids, or ``node:<node id>`` for a node.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from fog_shared.events.base import Event, EventType


class MessageSent(Event):
    """A message was stored as number ``seq`` of its conversation."""

    TYPE: ClassVar[EventType] = EventType("messaging", "message", "sent", 1)
    AGGREGATE_ID: ClassVar[str] = "message_id"

    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    reply_to_seq: int | None
    #: seqs of earlier messages the sender's vector clock shows as concurrent with this one
    concurrent_with: list[int]
    audience: list[str]
    sent_at: datetime


class MessageEdited(Event):
    TYPE: ClassVar[EventType] = EventType("messaging", "message", "edited", 1)
    AGGREGATE_ID: ClassVar[str] = "message_id"

    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    audience: list[str]
    edited_at: datetime


class MessageDeleted(Event):
    """The message's text is gone; its seq stays, as a tombstone."""

    TYPE: ClassVar[EventType] = EventType("messaging", "message", "deleted", 1)
    AGGREGATE_ID: ClassVar[str] = "message_id"

    message_id: str
    conversation_id: str
    seq: int
    deleted_by: str
    audience: list[str]
    deleted_at: datetime


class GroupCreated(Event):
    TYPE: ClassVar[EventType] = EventType("messaging", "group", "created", 1)
    AGGREGATE_ID: ClassVar[str] = "conversation_id"

    conversation_id: str
    name: str
    owner_id: str
    member_ids: list[str]
    created_at: datetime


class MemberAdded(Event):
    TYPE: ClassVar[EventType] = EventType("messaging", "group", "member_added", 1)
    AGGREGATE_ID: ClassVar[str] = "conversation_id"

    conversation_id: str
    member_id: str
    role: str
    added_by: str
    #: the member reads messages after this seq
    after_seq: int
    audience: list[str]
    added_at: datetime


class MemberRemoved(Event):
    """A member left or was removed; they read nothing sent after ``until_seq``."""

    TYPE: ClassVar[EventType] = EventType("messaging", "group", "member_removed", 1)
    AGGREGATE_ID: ClassVar[str] = "conversation_id"

    conversation_id: str
    member_id: str
    removed_by: str
    until_seq: int
    audience: list[str]
    removed_at: datetime


class MemberRoleChanged(Event):
    """A member's role changed (ownership transfers change two: the new owner's and the old one's)."""

    TYPE: ClassVar[EventType] = EventType("messaging", "group", "member_role_changed", 1)
    AGGREGATE_ID: ClassVar[str] = "conversation_id"

    conversation_id: str
    member_id: str
    role: str
    previous_role: str
    changed_by: str
    audience: list[str]
    changed_at: datetime


class ReceiptRecorded(Event):
    """A member's delivered or read mark moved forward to ``up_to_seq``."""

    TYPE: ClassVar[EventType] = EventType("messaging", "receipt", "recorded", 1)
    AGGREGATE_ID: ClassVar[str] = "conversation_id"

    conversation_id: str
    member_id: str
    kind: str
    up_to_seq: int
    audience: list[str]
    recorded_at: datetime


class FileUploaded(Event):
    """A file's last chunk is in and the whole file's SHA-256 matched: members may fetch it."""

    TYPE: ClassVar[EventType] = EventType("messaging", "file", "uploaded", 1)
    AGGREGATE_ID: ClassVar[str] = "file_id"

    file_id: str
    conversation_id: str
    uploaded_by: str
    name: str
    size: int
    sha256: str
    audience: list[str]
    uploaded_at: datetime


class FileDeleted(Event):
    """A complete file was deleted, by its uploader or a group's owner or admin: its bytes are gone."""

    TYPE: ClassVar[EventType] = EventType("messaging", "file", "deleted", 1)
    AGGREGATE_ID: ClassVar[str] = "file_id"

    file_id: str
    conversation_id: str
    uploaded_by: str
    deleted_by: str
    audience: list[str]
    deleted_at: datetime
