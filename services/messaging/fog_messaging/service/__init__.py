"""Messaging use cases: send, edit, delete, read; groups; receipts; sync.

Each takes the connection it works in; state changes, the events they cause (outbox) and the
timeline entries of everyone concerned commit together. Refusals are :class:`MessagingError`
with a stable code. Someone else's conversation looks like none (``not_found``).
"""

from fog_messaging.service.common import MessagingError, member_of
from fog_messaging.service.groups import add_member, create_group, remove_member, set_role, transfer
from fog_messaging.service.messages import (
    Sending,
    delete,
    edit,
    get_conversation,
    list_conversations,
    list_messages,
    search_messages,
    send,
    send_many,
)
from fog_messaging.service.receipts import list_receipts, record_receipt
from fog_messaging.service.sync import sync, sync_many

__all__ = [
    "MessagingError",
    "Sending",
    "add_member",
    "create_group",
    "delete",
    "edit",
    "get_conversation",
    "list_conversations",
    "list_messages",
    "list_receipts",
    "member_of",
    "record_receipt",
    "remove_member",
    "search_messages",
    "send",
    "send_many",
    "set_role",
    "sync",
    "sync_many",
    "transfer",
]
