"""Rows as the contract's replies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fog_messaging.domain import Receipt, Role
from fog_shared.commands import messaging as contract


def message_view(row: Mapping[str, Any], id_column: str = "id") -> contract.MessageView:
    return contract.MessageView(
        id=str(row[id_column]), conversation_id=str(row["conversation_id"]), seq=row["seq"],
        sender_id=row["sender_id"], text=row["text"], client_msg_id=row["client_msg_id"],
        reply_to_seq=row["reply_to_seq"], device_id=row["device_id"], clock=row["clock"],
        concurrent_with=list(row["concurrent_with"]), sent_at=row["sent_at"], edited_at=row["edited_at"],
        deleted_at=row["deleted_at"],
    )  # fmt: skip


def conversation_view(
    row: Mapping[str, Any],
    roster: Mapping[str, Role],
    last_seq: int,
    emails: Mapping[str, str],
    unread: tuple[int, int] = (0, 0),
) -> contract.ConversationView:
    """``unread``: the caller's read mark and unread count (``store.unread``)."""
    members = [
        contract.MemberView(member_id=member, role=role, email=emails.get(member)) for member, role in roster.items()
    ]
    return contract.ConversationView(
        id=str(row["id"]), kind=row["kind"], name=row["name"], last_seq=last_seq, members=members,
        created_at=row["created_at"], read_seq=unread[0], unread=unread[1],
    )  # fmt: skip


def receipt_view(member_id: str, receipt: Receipt) -> contract.ReceiptView:
    return contract.ReceiptView(member_id=member_id, delivered_seq=receipt.delivered_seq, read_seq=receipt.read_seq)


def sync_entry(row: Mapping[str, Any]) -> contract.SyncEntry:
    kind, payload = row["kind"], row["payload"] or {}
    entry: dict[str, Any] = {
        "position": row["position"], "conversation_id": str(row["conversation_id"]), "kind": kind,
        "at": row["created_at"],
    }  # fmt: skip
    if row["message_id"] is not None:
        entry["message"] = message_view(row, id_column="message_id")
    elif kind == "receipt":
        entry["receipt"] = contract.ReceiptView(**payload)
    elif kind in ("file", "file_deleted"):
        entry["file"] = contract.FileSummary(**payload)
    else:
        entry["member"] = contract.MemberChange(**payload)
    return contract.SyncEntry(**entry)
