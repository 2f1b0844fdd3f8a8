"""Messages: text limits, numbering, edits and deletions; receipts."""

from __future__ import annotations

from dataclasses import dataclass

from fog_messaging.domain.common import MAX_TEXT_BYTES, ReceiptKind, Rejected, Role


def check_text(text: str) -> None:
    size = len(text.encode())
    if size > MAX_TEXT_BYTES:
        raise Rejected("too_large", f"the text is {size} bytes; at most {MAX_TEXT_BYTES}")
    if not text.strip():
        raise Rejected("empty", "a message needs some text")


def next_seq(last_seq: int) -> int:
    """Per conversation, strictly increasing and without gaps: one more than the last."""
    return last_seq + 1


def check_edit(editor_id: str, sender_id: str, deleted: bool) -> None:
    if editor_id != sender_id:
        raise Rejected("forbidden", "only a message's sender edits it")
    if deleted:
        raise Rejected("deleted", "the message was deleted")


def may_delete(actor_id: str, actor_role: Role | None, sender_id: str) -> bool:
    """The sender, or a group's owner or admin (moderation)."""
    return actor_id == sender_id or actor_role in ("owner", "admin")


@dataclass(frozen=True, slots=True)
class Receipt:
    """How far a member has got: both marks only move forward; read implies delivered."""

    delivered_seq: int = 0
    read_seq: int = 0

    def advance(self, kind: ReceiptKind, up_to_seq: int, readable: int) -> Receipt | None:
        """The receipt after this one, or None when it changes nothing."""
        if up_to_seq < 1:
            raise Rejected("invalid_receipt", "receipts name a message seq of 1 or more")
        if up_to_seq > readable:
            raise Rejected("invalid_receipt", f"no readable message {up_to_seq} in this conversation")
        delivered = max(self.delivered_seq, up_to_seq)
        read = max(self.read_seq, up_to_seq) if kind == "read" else self.read_seq
        advanced = Receipt(delivered_seq=delivered, read_seq=read)
        return None if advanced == self else advanced
