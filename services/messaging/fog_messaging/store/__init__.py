"""SQL of the messaging service, one module per part of its schema. Every function runs on a
connection the caller owns.

jsonb values go in and come out as Python objects (the pool's codec, ``fog_shared.pg.pool``).
"""

from fog_messaging.store.conversations import (
    access,
    add_member,
    conversation,
    conversations_of,
    create_direct,
    create_group,
    direct_conversation_id,
    members,
    readers,
    remove_member,
    rosters,
    set_role,
)
from fog_messaging.store.files import (
    file,
    forget_chunks,
    insert_file,
    mark_complete,
    received_chunks,
    record_chunk,
)
from fog_messaging.store.keys import add_prekeys, claim_prekey, devices, identity_key, put_device
from fog_messaging.store.messages import (
    delete_message,
    device_history,
    edit_message,
    insert_message,
    list_messages,
    message,
    message_by_client_id,
    recent_clocks,
)
from fog_messaging.store.people import (
    count_users,
    known_users,
    node_owner,
    set_node_owner,
    upsert_user,
)
from fog_messaging.store.receipts import (
    receipt,
    receipts,
    save_receipt,
)
from fog_messaging.store.timeline import (
    append_timeline,
    append_timelines,
    missed,
    position_before_latest,
    prune_timeline,
    read_timeline,
    timeline_bounds,
    timeline_entries,
    timeline_positions,
)

__all__ = [
    "access",
    "add_member",
    "add_prekeys",
    "append_timeline",
    "append_timelines",
    "claim_prekey",
    "conversation",
    "conversations_of",
    "count_users",
    "create_direct",
    "create_group",
    "delete_message",
    "device_history",
    "devices",
    "direct_conversation_id",
    "edit_message",
    "file",
    "forget_chunks",
    "identity_key",
    "insert_file",
    "insert_message",
    "known_users",
    "list_messages",
    "mark_complete",
    "members",
    "message",
    "message_by_client_id",
    "missed",
    "node_owner",
    "position_before_latest",
    "prune_timeline",
    "put_device",
    "read_timeline",
    "readers",
    "receipt",
    "receipts",
    "received_chunks",
    "recent_clocks",
    "record_chunk",
    "remove_member",
    "rosters",
    "save_receipt",
    "set_node_owner",
    "set_role",
    "timeline_bounds",
    "timeline_entries",
    "timeline_positions",
    "upsert_user",
]
