"""Pure rules of the messaging service: synchronous, no I/O, no clock, no uuid4 (all passed in).

The import-linter contract in pyproject.toml keeps asyncpg, nats, faststream and HTTP out of here.

Members are named by a *member id*: a user's id, or ``node:<node id>`` for a node (a node may
talk to its owner only). Conversations are direct (exactly one per pair of members) or groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

#: a message's text, in UTF-8 bytes
MAX_TEXT_BYTES = 16 * 1024
#: members of one group, its owner included
MAX_GROUP_MEMBERS = 256
#: devices one vector clock may name
MAX_CLOCK_DEVICES = 64
MAX_CLOCK_COUNTER = 2**53  # exact in every JSON implementation
NODE_PREFIX = "node:"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Role = Literal["owner", "admin", "member"]
ReceiptKind = Literal["delivered", "read"]


class Rejected(ValueError):
    """A rule said no: a stable ``code`` for machines and a reason for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def node_member(node_id: str) -> str:
    return NODE_PREFIX + node_id


def is_node(member_id: str) -> bool:
    return member_id.startswith(NODE_PREFIX)


# -- conversations -------------------------------------------------------------------------


def direct_key(a: str, b: str) -> str:
    """The one key of the direct conversation between ``a`` and ``b``, whoever starts it."""
    if a == b:
        raise Rejected("invalid_recipient", "a direct conversation needs two different members")
    first, second = sorted((a, b))
    return f"{first}|{second}"


def group_roster(owner_id: str, member_ids: Iterable[str]) -> dict[str, Role]:
    """A new group's members and roles: its creator owns it; nodes cannot be group members."""
    roster: dict[str, Role] = {owner_id: "owner"}
    for member in member_ids:
        if is_node(member):
            raise Rejected("invalid_member", "nodes talk to their owners only, not in groups")
        roster.setdefault(member, "member")
    check_group_size(len(roster))
    return roster


def check_group_size(size: int) -> None:
    if size > MAX_GROUP_MEMBERS:
        raise Rejected("group_full", f"a group has at most {MAX_GROUP_MEMBERS} members")


def may_add(actor: Role | None) -> bool:
    return actor in ("owner", "admin")


def check_add(actor: Role | None, new_member: str, current_size: int, already_member: bool) -> None:
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if not may_add(actor):
        raise Rejected("forbidden", "only the group's owner and admins add members")
    if is_node(new_member):
        raise Rejected("invalid_member", "nodes talk to their owners only, not in groups")
    if not already_member:
        check_group_size(current_size + 1)


def check_remove(actor_id: str, actor: Role | None, target_id: str, target: Role | None) -> None:
    """Who may take whom out: anyone may leave (but the owner must hand the group over first),
    the owner removes anyone, an admin removes plain members."""
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if target is None:
        raise Rejected("not_found", "no such member")
    if target == "owner":
        raise Rejected("owner_must_transfer", "the owner hands the group to another member before leaving")
    if actor_id == target_id:
        return
    if actor == "owner" or (actor == "admin" and target == "member"):
        return
    raise Rejected("forbidden", f"a group's {actor} cannot remove its {target}")


def check_set_role(actor: Role | None, target: Role | None, role: Role) -> None:
    """The owner appoints admins and members; ownership moves only by :func:`transfer`."""
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if target is None:
        raise Rejected("not_found", "no such member")
    if actor != "owner":
        raise Rejected("forbidden", "only the group's owner changes roles")
    if role == "owner" or target == "owner":
        raise Rejected("use_transfer", "ownership moves by transferring it")


def transfer(actor_id: str, actor: Role | None, target_id: str, target: Role | None) -> dict[str, Role]:
    """The roles after the owner hands the group to ``target_id``: the old owner stays, as an admin."""
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if actor != "owner":
        raise Rejected("forbidden", "only the owner transfers ownership")
    if target is None:
        raise Rejected("not_found", "no such member")
    if target_id == actor_id:
        raise Rejected("invalid_member", "the owner already owns the group")
    return {target_id: "owner", actor_id: "admin"}


# -- messages ------------------------------------------------------------------------------


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


# -- who reads what -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Access:
    """One stretch of membership: messages with ``after_seq < seq <= until_seq`` are readable
    (``until_seq`` is None while a member). A member sees the history from their joining on,
    never what was sent after they left."""

    after_seq: int
    until_seq: int | None = None

    def covers(self, seq: int) -> bool:
        return seq > self.after_seq and (self.until_seq is None or seq <= self.until_seq)


def may_read(periods: Iterable[Access], seq: int) -> bool:
    return any(period.covers(seq) for period in periods)


def readable_up_to(periods: Sequence[Access], last_seq: int) -> int:
    """The newest seq the member may see (0 if none)."""
    best = 0
    for period in periods:
        end = last_seq if period.until_seq is None else min(period.until_seq, last_seq)
        if end > period.after_seq:
            best = max(best, end)
    return best


# -- receipts -------------------------------------------------------------------------------


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


# -- vector clocks ------------------------------------------------------------------------

VectorClock = Mapping[str, int]


class Causality(Enum):
    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


def check_clock(clock: VectorClock, device_id: str | None) -> dict[str, int]:
    """A clock a device attached to its message: the author's own device counts in it.

    Returns it as a plain dict; raises :class:`Rejected` (``invalid_clock``) when malformed."""
    if device_id is None:
        raise Rejected("invalid_clock", "a vector clock needs the device_id of the device that wrote the message")
    if not clock:
        raise Rejected("invalid_clock", "a vector clock names at least the author's device")
    if len(clock) > MAX_CLOCK_DEVICES:
        raise Rejected("invalid_clock", f"a vector clock names at most {MAX_CLOCK_DEVICES} devices")
    for device, counter in clock.items():
        if not isinstance(device, str) or not _DEVICE_ID.match(device):
            raise Rejected("invalid_clock", f"{device!r} is not a device id")
        if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= MAX_CLOCK_COUNTER:
            raise Rejected("invalid_clock", f"the counter of {device} must be an integer from 1 to 2^53")
    if device_id not in clock:
        raise Rejected("invalid_clock", f"the clock does not count the author's device {device_id}")
    return dict(clock)


def check_device_counter(clock: VectorClock, device_id: str, *, used_by_another: bool, previous: int | None) -> None:
    """A device belongs to one sender in a conversation, and its own counter grows with every
    message it writes: otherwise the clock would claim another's writes or rewrite history."""
    if used_by_another:
        raise Rejected("invalid_clock", f"device {device_id} writes for another member of this conversation")
    if previous is not None and clock[device_id] <= previous:
        raise Rejected("stale_clock", f"device {device_id} already wrote with counter {previous}; counters only grow")


def compare(a: VectorClock, b: VectorClock) -> Causality:
    """How the event stamped ``a`` relates to the one stamped ``b`` (a missing device counts 0)."""
    a_less = b_less = False
    for device in a.keys() | b.keys():
        x, y = a.get(device, 0), b.get(device, 0)
        a_less |= x < y
        b_less |= y < x
    if a_less and b_less:
        return Causality.CONCURRENT
    if a_less:
        return Causality.BEFORE
    if b_less:
        return Causality.AFTER
    return Causality.EQUAL


def happened_before(a: VectorClock, b: VectorClock) -> bool:
    return compare(a, b) is Causality.BEFORE


def concurrent(a: VectorClock, b: VectorClock) -> bool:
    return compare(a, b) is Causality.CONCURRENT


def merge(a: VectorClock, b: VectorClock) -> dict[str, int]:
    """The least clock at or after both."""
    return {device: max(a.get(device, 0), b.get(device, 0)) for device in a.keys() | b.keys()}


def clock_weight(clock: VectorClock) -> int:
    """The sum of a clock's counters. If ``a`` happened before ``b``, ``a``'s weight is strictly
    smaller (every counter ≤, one <), so sorting by weight never puts an effect before its cause."""
    return sum(clock.values())


CausalKey = tuple[int, str, str, str]


def causal_key(weight: int, device_id: str, sender_id: str, client_msg_id: str) -> CausalKey:
    """A total order of messages that extends happened-before: by weight, then (for concurrent
    messages of equal weight) by device, sender and the client's message id — all chosen by the
    authors, so every reader, whatever order the messages arrived in, sees the same order."""
    return (weight, device_id, sender_id, client_msg_id)


def concurrent_with(clock: VectorClock, earlier: Iterable[tuple[int, VectorClock]]) -> list[int]:
    """The seqs of ``earlier`` messages (seq, clock) that are concurrent with ``clock``."""
    return sorted(seq for seq, other in earlier if concurrent(clock, other))


# -- files --------------------------------------------------------------------------------


def chunk_count(size: int, chunk_bytes: int) -> int:
    return -(-size // chunk_bytes)


def expected_chunk_size(size: int, index: int, chunk_bytes: int) -> int:
    """Every chunk is ``chunk_bytes`` long but the last, which holds the rest."""
    count = chunk_count(size, chunk_bytes)
    if not 0 <= index < count:
        raise Rejected("invalid_chunk", f"the file has chunks 0 to {count - 1}")
    return size - chunk_bytes * (count - 1) if index == count - 1 else chunk_bytes


def check_chunk(size: int, index: int, chunk_bytes: int, length: int, claimed_sha256: str, sha256: str) -> None:
    """A chunk is the right length and its bytes hash to what the client says (else it was
    damaged on the way, and is refused so that the client sends it again)."""
    expected = expected_chunk_size(size, index, chunk_bytes)
    if length != expected:
        raise Rejected("invalid_chunk", f"chunk {index} is {expected} bytes, not {length}")
    if claimed_sha256 != sha256:
        raise Rejected("chunk_corrupt", f"chunk {index} does not match its SHA-256")


def missing_chunks(count: int, received: Iterable[int]) -> list[int]:
    return sorted(set(range(count)) - set(received))


# -- the key directory ----------------------------------------------------------------------


def replaces_identity(current: str | None, published: str) -> bool:
    """A device publishing another identity key is a new device under the old id (reinstalled):
    what belonged to the old identity (its unclaimed prekeys) must not be handed out with it."""
    return current is not None and current != published


# -- sync tokens ----------------------------------------------------------------------------

TOKEN_PREFIX = "s"  # noqa: S105 - a format marker, not a secret


def sync_token(position: int) -> str:
    """An opaque-looking token for a position in the caller's timeline."""
    return f"{TOKEN_PREFIX}{position}"


def parse_sync_token(token: str | None) -> int:
    """The position a token stands for; no token means from the start."""
    if token is None or token == "":
        return 0
    digits = token.removeprefix(TOKEN_PREFIX)
    if token[:1] != TOKEN_PREFIX or not digits.isdigit() or len(digits) > 18:
        raise Rejected("invalid_token", "the since token is not one this API gave out")
    return int(digits)


@dataclass(frozen=True, slots=True)
class SyncWindow:
    """Where one sync starts in the caller's timeline.

    ``limited`` when the caller missed more than is kept (retention dropped entries after their
    token) or more than ``catch_up_max`` entries: the sync then starts after the gap and says so,
    and the client pages back per conversation for what it wants of it. ``start`` None means
    "just before the caller's newest ``limit`` entries"."""

    start: int | None
    limited: bool


def sync_window(since: int, head: int, pruned_through: int, missed: int, catch_up_max: int) -> SyncWindow:
    """``head``: the newest position; ``pruned_through``: retention may have dropped entries up to
    this position; ``missed``: how many entries the caller has after ``since`` (counted up to
    ``catch_up_max + 1``)."""
    if since > head:
        raise Rejected("invalid_token", "the since token is from the future")
    if since < pruned_through:
        return SyncWindow(start=pruned_through, limited=True)  # all that is still kept, oldest first
    if missed > catch_up_max:
        return SyncWindow(start=None, limited=True)
    return SyncWindow(start=since, limited=False)
