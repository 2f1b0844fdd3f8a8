"""Pure rules of the messaging service: synchronous, no I/O, no clock, no uuid4 (all passed in).

The import-linter contract in pyproject.toml keeps asyncpg, nats, faststream and HTTP out of here.

Members are named by a *member id*: a user's id, or ``node:<node id>`` for a node (a node may
talk to its owner only). Conversations are direct (exactly one per pair of members) or groups.
"""

from fog_messaging.domain.clocks import (
    Causality,
    CausalKey,
    VectorClock,
    causal_key,
    check_clock,
    check_device_counter,
    clock_weight,
    compare,
    concurrent,
    concurrent_with,
    happened_before,
    merge,
)
from fog_messaging.domain.common import (
    DEVICE_ID,
    MAX_CLOCK_COUNTER,
    MAX_CLOCK_DEVICES,
    MAX_GROUP_MEMBERS,
    MAX_TEXT_BYTES,
    NODE_PREFIX,
    ReceiptKind,
    Rejected,
    Role,
    is_node,
    node_member,
)
from fog_messaging.domain.conversations import (
    Access,
    check_add,
    check_group_size,
    check_remove,
    check_set_role,
    direct_key,
    group_roster,
    may_add,
    may_read,
    readable_up_to,
    transfer,
)
from fog_messaging.domain.files import (
    check_chunk,
    chunk_count,
    expected_chunk_size,
    missing_chunks,
)
from fog_messaging.domain.keys import check_signed_prekey, replaces_identity, replaces_signing_key
from fog_messaging.domain.messages import (
    Receipt,
    check_edit,
    check_text,
    may_delete,
    next_seq,
)
from fog_messaging.domain.sync import (
    SyncWindow,
    parse_sync_token,
    sync_token,
    sync_window,
)

__all__ = [
    "DEVICE_ID",
    "MAX_CLOCK_COUNTER",
    "MAX_CLOCK_DEVICES",
    "MAX_GROUP_MEMBERS",
    "MAX_TEXT_BYTES",
    "NODE_PREFIX",
    "Access",
    "CausalKey",
    "Causality",
    "Receipt",
    "ReceiptKind",
    "Rejected",
    "Role",
    "SyncWindow",
    "VectorClock",
    "causal_key",
    "check_add",
    "check_chunk",
    "check_clock",
    "check_device_counter",
    "check_edit",
    "check_group_size",
    "check_remove",
    "check_set_role",
    "check_signed_prekey",
    "check_text",
    "chunk_count",
    "clock_weight",
    "compare",
    "concurrent",
    "concurrent_with",
    "direct_key",
    "expected_chunk_size",
    "group_roster",
    "happened_before",
    "is_node",
    "may_add",
    "may_delete",
    "may_read",
    "merge",
    "missing_chunks",
    "next_seq",
    "node_member",
    "parse_sync_token",
    "readable_up_to",
    "replaces_identity",
    "replaces_signing_key",
    "sync_token",
    "sync_window",
    "transfer",
]
