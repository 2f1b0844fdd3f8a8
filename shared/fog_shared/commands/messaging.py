"""Requests the messaging service answers, and its replies: BitChat behind ``/v1/conversations``,
``/v1/groups`` and ``/v1/sync``. See docs/messaging.md.

Members are named by member id: a user's id, or ``node:<node id>`` for a node. The sender of a
message is always the caller the gateway authenticated (``by``): bodies cannot name one.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from fog_shared.commands.auth import Principal
from fog_shared.commands.common import ErrorReply, Strict, Text, Timestamp, error
from fog_shared.subjects import command_subject, query_subject

__all__ = ["ErrorReply", "error"]

SEND = command_subject("messaging", "send")
EDIT = command_subject("messaging", "edit")
#: rebuild one of messaging's event-derived read models (users, node_owners) and compare: replies a RebuildReport
REBUILD = command_subject("messaging", "rebuild")
DELETE = command_subject("messaging", "delete")
LIST_MESSAGES = query_subject("messaging", "list_messages")
SEARCH_MESSAGES = query_subject("messaging", "search_messages")
LIST_CONVERSATIONS = query_subject("messaging", "list_conversations")
GET_CONVERSATION = query_subject("messaging", "get_conversation")
CREATE_GROUP = command_subject("messaging", "create_group")
ADD_MEMBER = command_subject("messaging", "add_member")
REMOVE_MEMBER = command_subject("messaging", "remove_member")
SET_ROLE = command_subject("messaging", "set_role")
TRANSFER = command_subject("messaging", "transfer")
RECORD_RECEIPT = command_subject("messaging", "record_receipt")
LIST_RECEIPTS = query_subject("messaging", "list_receipts")
SYNC = query_subject("messaging", "sync")
SYNC_MANY = query_subject("messaging", "sync_many")

#: a message's text, in UTF-8 bytes
MAX_TEXT_BYTES = 16 * 1024
MAX_CLOCK_DEVICES = 64

MemberId = Annotated[str, StringConstraints(pattern=r"^(node:)?[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
ConversationId = Annotated[str, StringConstraints(max_length=64)]
DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
ClientMsgId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Seq = Annotated[int, Field(ge=1, le=2**53)]
Counter = Annotated[int, Field(ge=1, le=2**53)]
SyncToken = Annotated[str, StringConstraints(max_length=32)]
#: a sync token is this and a timeline position: opaque to clients, read by the gateways that
#: feed live streams from timeline pushes
SYNC_TOKEN_PREFIX = "s"  # noqa: S105 - a format marker, not a secret


def sync_token(position: int) -> str:
    return f"{SYNC_TOKEN_PREFIX}{position}"


def token_position(token: str | None) -> int | None:
    """The position a token stands for (no token: 0), or None when it is not a token at all."""
    if token is None or token == "":
        return 0
    digits = token.removeprefix(SYNC_TOKEN_PREFIX)
    if token[:1] != SYNC_TOKEN_PREFIX or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)


Kind = Literal["direct", "group"]
Role = Literal["owner", "admin", "member"]
ReceiptKind = Literal["delivered", "read"]
Order = Literal["seq", "causal"]


def _text_bounded(text: str) -> str:
    size = len(text.encode())
    if size > MAX_TEXT_BYTES:
        raise ValueError(f"the text is {size} bytes; at most {MAX_TEXT_BYTES}")
    return text


class SendRequest(Strict):
    """A message as a client sends it (``POST .../messages``)."""

    text: Text = Field(min_length=1, max_length=MAX_TEXT_BYTES)
    #: the client's id for this message: a retry with the same id stores nothing new
    client_msg_id: ClientMsgId
    reply_to_seq: Seq | None = None
    #: the writing device; needed with a clock
    device_id: DeviceId | None = None
    #: the device's vector clock when it wrote the message (offline-authored messages)
    clock: dict[DeviceId, Counter] | None = Field(default=None, max_length=MAX_CLOCK_DEVICES)

    _bounded = field_validator("text")(_text_bounded)


class EditRequest(Strict):
    text: Text = Field(min_length=1, max_length=MAX_TEXT_BYTES)

    _bounded = field_validator("text")(_text_bounded)


class SendCommand(Strict):
    by: Principal
    #: the conversation, or ``to`` for the direct conversation with that member (made on first use)
    conversation_id: ConversationId | None = None
    to: MemberId | None = None
    message: SendRequest


class MessageView(Strict):
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    #: None once deleted (the seq stays, as a tombstone)
    text: str | None
    client_msg_id: str
    reply_to_seq: int | None
    device_id: str | None
    clock: dict[str, int] | None
    #: seqs of earlier messages this one's clock shows as concurrent with it
    concurrent_with: list[int]
    sent_at: Timestamp
    edited_at: Timestamp | None
    deleted_at: Timestamp | None


class SendReply(Strict):
    message: MessageView
    #: False when the client message id was already used: the first message comes back
    created: bool


class MessageCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    seq: Seq


class EditCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    seq: Seq
    edit: EditRequest


class ListMessagesQuery(Strict):
    by: Principal
    conversation_id: ConversationId
    #: only messages after / before these seqs (paging forward / back)
    after_seq: int | None = Field(default=None, ge=0, le=2**53)
    before_seq: Seq | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    #: ``seq``: as stored; ``causal``: happened-before first, concurrent ones in a fixed order
    order: Order = "seq"


class SearchMessagesQuery(Strict):
    by: Principal
    #: what the text holds, compared case-insensitively (no patterns: ``%`` is a percent sign)
    text: Text = Field(min_length=1, max_length=200)
    #: only in this conversation
    conversation_id: ConversationId | None = None
    limit: int = Field(default=20, ge=1, le=100)


class MessagePage(Strict):
    items: list[MessageView]
    #: more messages in the direction asked
    more: bool


class MemberView(Strict):
    member_id: str
    role: Role
    #: the member's e-mail address, for a person (who the fellow members are); None for a node
    email: str | None = None


class ConversationView(Strict):
    id: str
    kind: Kind
    name: str | None
    #: the newest message seq the caller may read
    last_seq: int
    members: list[MemberView]
    created_at: Timestamp
    #: the caller's read mark (``POST .../receipts`` kind ``read``)
    read_seq: int = 0
    #: messages of others after the caller's read mark that the caller may read and that are not deleted;
    #: the count stops at ``UNREAD_CAP``
    unread: int = 0


#: where a conversation's unread count stops counting ("1000+"): a long-unread group costs no more than that
UNREAD_CAP = 1000


class ConversationList(Strict):
    items: list[ConversationView]


class ConversationQuery(Strict):
    by: Principal
    conversation_id: ConversationId


class ByQuery(Strict):
    by: Principal


class CreateGroupRequest(Strict):
    name: Text = Field(min_length=1, max_length=100)
    member_ids: list[MemberId] = Field(default=[], max_length=255)


class CreateGroupCommand(Strict):
    by: Principal
    group: CreateGroupRequest


class AddMemberRequest(Strict):
    member_id: MemberId
    role: Literal["admin", "member"] = "member"


class AddMemberCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    member: AddMemberRequest


class RemoveMemberCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    member_id: MemberId


class SetRoleRequest(Strict):
    role: Literal["admin", "member"]


class SetRoleCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    member_id: MemberId
    change: SetRoleRequest


class TransferRequest(Strict):
    member_id: MemberId


class TransferCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    transfer: TransferRequest


class ReceiptRequest(Strict):
    kind: ReceiptKind
    #: everything up to this seq was delivered / read
    up_to_seq: Seq


class ReceiptCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    receipt: ReceiptRequest


class ReceiptView(Strict):
    member_id: str
    delivered_seq: int
    read_seq: int


class ReceiptList(Strict):
    items: list[ReceiptView]


class SyncQuery(Strict):
    by: Principal
    since: SyncToken | None = None
    limit: int = Field(default=500, ge=1, le=1000)


EntryKind = Literal[
    "message",
    "edited",
    "deleted",
    "group_created",
    "member_added",
    "member_removed",
    "role_changed",
    "receipt",
    "file",
    "file_deleted",
]


class FileSummary(Strict):
    """A file in a sync entry: fetch it with ``GET /v1/files/{id}/content``."""

    id: str
    name: str
    size: int
    sha256: str
    uploaded_by: str


class MemberChange(Strict):
    member_id: str
    role: Role | None
    by: str


class SyncEntry(Strict):
    """One change in the caller's timeline; ``position`` orders them across conversations."""

    position: int
    conversation_id: str
    kind: EntryKind
    #: the message as it is now (message, edited, deleted)
    message: MessageView | None = None
    member: MemberChange | None = None
    receipt: ReceiptView | None = None
    #: the file shared (file), or deleted (file_deleted): drop what you kept of it
    file: FileSummary | None = None
    at: Timestamp


class Gap(Strict):
    """Changes after ``since`` and up to ``until`` are not in this sync: too many, or past retention.
    Page back through ``GET /v1/conversations/{id}/messages?before_seq=`` for what is still kept."""

    since: str
    until: str


class SyncReply(Strict):
    entries: list[SyncEntry]
    #: the token for the next sync
    next: str
    #: True when changes were left out (see ``gap``): never a silent skip
    limited: bool
    gap: Gap | None = None
    #: more entries wait: sync again with ``next`` at once
    more: bool


#: the most syncs one ``sync_many`` carries
MAX_SYNC_BATCH = 500


class SyncManyQuery(Strict):
    """Several callers' syncs answered from one snapshot: a gateway asks this for all of its live
    streams that a change woke at once, instead of one request per stream."""

    queries: list[SyncQuery] = Field(min_length=1, max_length=MAX_SYNC_BATCH)


class SyncPart(Strict):
    """One query's answer in a :class:`SyncManyReply`: a :class:`SyncReply` whose entries are
    named by position (a change's entry is the same for everyone it concerns, so it travels once)."""

    positions: list[int]
    next: str
    limited: bool
    gap: Gap | None = None
    more: bool


class SyncManyReply(Strict):
    #: every entry some part names, once each
    entries: list[SyncEntry]
    #: one per query, in order: a :class:`SyncPart`'s JSON, or an error reply (``{"error": ...}``)
    replies: list[dict[str, Any]]


# -- the key directory (end-to-end encryption) -----------------------------------------------

PUBLISH_KEYS = command_subject("messaging", "publish_keys")
USER_KEYS = query_subject("messaging", "user_keys")
CLAIM_PREKEY = command_subject("messaging", "claim_prekey")
MAX_PREKEYS_PER_UPLOAD = 100


def _base64_bytes(size: int, what: str) -> AfterValidator:
    """A check that a string is ``size`` bytes in standard base64."""

    def check(value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} is standard base64") from None
        if len(raw) != size:
            raise ValueError(f"{what} is {size} bytes, not {len(raw)}")
        return value

    return AfterValidator(check)


#: an X25519 public key: 32 bytes, standard base64 with padding (44 characters)
PublicKey = Annotated[str, StringConstraints(min_length=44, max_length=44), _base64_bytes(32, "an X25519 public key")]
#: an Ed25519 public key: 32 bytes too, standard base64
SigningKey = Annotated[str, StringConstraints(min_length=44, max_length=44), _base64_bytes(32, "an Ed25519 public key")]
#: an Ed25519 signature: 64 bytes, standard base64 with padding (88 characters)
Signature = Annotated[str, StringConstraints(min_length=88, max_length=88), _base64_bytes(64, "an Ed25519 signature")]


class Prekey(Strict):
    key_id: int = Field(ge=0, le=2**31 - 1)
    public_key: PublicKey


class SignedPrekey(Strict):
    """A device's medium-term prekey, handed to every sender (X3DH's signed prekey): a session can be opened
    with it when the one-time prekeys have run out. Rotated by publishing another."""

    key_id: int = Field(ge=0, le=2**31 - 1)
    public_key: PublicKey
    #: by the device's signing key, over the 32 bytes of ``public_key``
    signature: Signature


class DeviceKeysUpload(Strict):
    """A device's identity key, and optionally its signing key and signed prekey, and a batch of one-time prekeys
    (``PUT /v1/keys/devices/{id}``).

    The same identity key again adds the prekeys (and replaces the signed prekey, if one is sent); another
    identity key, or another signing key, replaces the device (its unclaimed prekeys and its signed prekey go)."""

    identity_key: PublicKey
    #: the device's Ed25519 public key: what its signed prekey is checked with
    signing_key: SigningKey | None = None
    signed_prekey: SignedPrekey | None = None
    prekeys: list[Prekey] = Field(default=[], max_length=MAX_PREKEYS_PER_UPLOAD)

    @model_validator(mode="after")
    def _signed_by_a_key_sent_with_it(self) -> DeviceKeysUpload:
        if self.signed_prekey is not None and self.signing_key is None:
            raise ValueError("a signed prekey comes with the signing_key that signed it")
        return self


class PublishKeysCommand(Strict):
    by: Principal
    device_id: DeviceId
    keys: DeviceKeysUpload


class DeviceKeys(Strict):
    device_id: str
    identity_key: str
    signing_key: str | None = None
    signed_prekey: SignedPrekey | None = None
    #: one-time prekeys not yet claimed
    prekeys_left: int
    updated_at: Timestamp


class UserKeys(Strict):
    user_id: str
    devices: list[DeviceKeys]


class UserKeysQuery(Strict):
    by: Principal
    user_id: MemberId


class ClaimPrekeyCommand(Strict):
    by: Principal
    user_id: MemberId
    device_id: DeviceId


class ClaimedPrekey(Strict):
    """What a sender needs to open a session with one device: its identity key, its signing key and signed prekey
    (if it published them; check the signature), and one one-time prekey, never handed out twice (None when the
    device has none left: use the signed prekey alone)."""

    user_id: str
    device_id: str
    identity_key: str
    signing_key: str | None = None
    signed_prekey: SignedPrekey | None = None
    prekey: Prekey | None


# -- people -------------------------------------------------------------------------------------

#: a person's member id, by their e-mail address (exact, whatever its case)
FIND_PERSON = query_subject("messaging", "find_person")


class FindPersonQuery(Strict):
    by: Principal
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$")


class PersonView(Strict):
    """Someone to message: their member id (a user's id) and the e-mail address they signed up with."""

    user_id: str
    email: str


# -- files ------------------------------------------------------------------------------------

START_UPLOAD = command_subject("messaging", "start_upload")
PUT_CHUNK = command_subject("messaging", "put_chunk")
COMPLETE_UPLOAD = command_subject("messaging", "complete_upload")
#: cancels an upload under way, or deletes a complete file
REMOVE_FILE = command_subject("messaging", "remove_file")
GET_FILE = query_subject("messaging", "get_file")
READ_CHUNK = query_subject("messaging", "read_chunk")
LIST_UPLOADS = query_subject("messaging", "list_uploads")
#: a conversation's complete files, newest first
LIST_FILES = query_subject("messaging", "list_files")

#: files are sent in chunks of this size (the last one may be shorter)
CHUNK_BYTES = 512 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_CHUNKS = MAX_FILE_BYTES // CHUNK_BYTES
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
FileId = Annotated[str, StringConstraints(max_length=64)]
ChunkIndex = Annotated[int, Field(ge=0, lt=MAX_CHUNKS)]
FileStatus = Literal["uploading", "complete"]


class FileUploadRequest(Strict):
    """A file about to be sent in chunks (``POST /v1/conversations/{id}/files``)."""

    name: Text = Field(min_length=1, max_length=255)
    size: int = Field(ge=1, le=MAX_FILE_BYTES)
    #: of the whole file, lower-case hex: checked when the last chunk is in
    sha256: Sha256Hex


class StartUploadCommand(Strict):
    by: Principal
    conversation_id: ConversationId
    upload: FileUploadRequest


class FileView(Strict):
    id: str
    conversation_id: str
    name: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int
    #: chunks not received yet: after a dropped connection, send only these
    missing: list[int]
    status: FileStatus
    uploaded_by: str
    created_at: Timestamp
    completed_at: Timestamp | None


class UploadList(Strict):
    """The caller's uploads under way (``GET /v1/uploads``), newest first: to resume or cancel."""

    items: list[FileView]


class ListFilesQuery(Strict):
    by: Principal
    conversation_id: ConversationId
    #: ``next_cursor`` of the page before
    cursor: str | None = Field(default=None, max_length=128)
    limit: int = Field(default=50, ge=1, le=200)


class FilePage(Strict):
    """A conversation's complete files (``GET /v1/conversations/{id}/files``), the last completed first."""

    items: list[FileView]
    #: where the next page starts; None on the last
    next_cursor: str | None


class ChunkCommand(Strict):
    by: Principal
    file_id: FileId
    index: ChunkIndex
    #: of this chunk, lower-case hex: a chunk that does not match is refused
    sha256: Sha256Hex
    #: the chunk's bytes, base64
    data: str = Field(max_length=(CHUNK_BYTES // 3 + 1) * 4)


class FileQuery(Strict):
    by: Principal
    file_id: FileId


class ReadChunkQuery(Strict):
    by: Principal
    file_id: FileId
    index: ChunkIndex


class ChunkData(Strict):
    index: int
    #: base64
    data: str
