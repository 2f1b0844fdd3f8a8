"""Messaging's pure rules: conversations, groups and roles, messages, who reads what, receipts,
sync windows."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fog_messaging import domain
from fog_messaging.domain import Access, Receipt, Rejected


@contextlib.contextmanager
def refused(code: str) -> Iterator[None]:
    """``with refused("forbidden"):`` the block raises :class:`Rejected` with exactly this code."""
    with pytest.raises(Rejected) as refusal:
        yield
    assert refusal.value.code == code, refusal.value.detail


# -- conversations ------------------------------------------------------------------------


def test_a_pair_has_one_direct_key_whoever_starts() -> None:
    assert domain.direct_key("alice", "bob") == domain.direct_key("bob", "alice")
    assert domain.direct_key("alice", "bob") != domain.direct_key("alice", "carol")


def test_nobody_has_a_direct_conversation_with_themselves() -> None:
    with refused("invalid_recipient"):
        domain.direct_key("alice", "alice")


def test_a_new_group_is_owned_by_its_creator_and_deduplicates_members() -> None:
    roster = domain.group_roster("alice", ["bob", "carol", "bob", "alice"])
    assert roster == {"alice": "owner", "bob": "member", "carol": "member"}


def test_groups_are_bounded_and_have_no_nodes() -> None:
    with refused("group_full"):
        domain.group_roster("owner", [f"u{i}" for i in range(domain.MAX_GROUP_MEMBERS)])
    domain.group_roster("owner", [f"u{i}" for i in range(domain.MAX_GROUP_MEMBERS - 1)])
    with refused("invalid_member"):
        domain.group_roster("owner", [domain.node_member("n1")])


@pytest.mark.parametrize(("actor", "allowed"), [("owner", True), ("admin", True), ("member", False)])
def test_owners_and_admins_add_members(actor: domain.Role, allowed: bool) -> None:
    if allowed:
        domain.check_add(actor, "new", current_size=3, already_member=False)
    else:
        with refused("forbidden"):
            domain.check_add(actor, "new", current_size=3, already_member=False)


def test_adding_to_a_full_group_is_refused_but_re_adding_a_member_is_not() -> None:
    full = domain.MAX_GROUP_MEMBERS
    with refused("group_full"):
        domain.check_add("owner", "new", current_size=full, already_member=False)
    domain.check_add("owner", "old", current_size=full, already_member=True)


def test_outsiders_do_not_learn_the_group_exists() -> None:
    with refused("not_found"):
        domain.check_add(None, "new", current_size=3, already_member=False)
    with refused("not_found"):
        domain.check_remove("x", None, "bob", "member")


@pytest.mark.parametrize(
    ("actor", "target", "allowed"),
    [
        ("owner", "admin", True), ("owner", "member", True), ("admin", "member", True),
        ("admin", "admin", False), ("member", "member", False), ("member", "admin", False),
    ],
)  # fmt: skip
def test_who_removes_whom(actor: domain.Role, target: domain.Role, allowed: bool) -> None:
    if allowed:
        domain.check_remove("actor", actor, "target", target)
    else:
        with refused("forbidden"):
            domain.check_remove("actor", actor, "target", target)


def test_anyone_but_the_owner_may_leave() -> None:
    domain.check_remove("bob", "member", "bob", "member")
    domain.check_remove("ann", "admin", "ann", "admin")
    with refused("owner_must_transfer"):
        domain.check_remove("alice", "owner", "alice", "owner")
    with refused("not_found"):
        domain.check_remove("alice", "owner", "ghost", None)


def test_transfer_makes_the_old_owner_an_admin() -> None:
    assert domain.transfer("alice", "owner", "bob", "member") == {"bob": "owner", "alice": "admin"}


@pytest.mark.parametrize(
    ("actor", "target", "target_role", "code"),
    [("bob", "carol", "member", "forbidden"), ("alice", "ghost", None, "not_found"), ("alice", "alice", "owner",
     "invalid_member")],
)  # fmt: skip
def test_only_the_owner_transfers_to_another_member(
    actor: str, target: str, target_role: domain.Role | None, code: str
) -> None:
    roles: dict[str, domain.Role] = {"alice": "owner", "bob": "admin", "carol": "member"}
    with refused(code):
        domain.transfer(actor, roles[actor], target, target_role)


def test_roles_are_set_by_the_owner_and_never_to_owner() -> None:
    domain.check_set_role("owner", "member", "admin")
    with refused("forbidden"):
        domain.check_set_role("admin", "member", "admin")
    with refused("use_transfer"):
        domain.check_set_role("owner", "member", "owner")


# -- messages -----------------------------------------------------------------------------


def test_text_is_bounded_in_bytes_not_characters() -> None:
    domain.check_text("x" * domain.MAX_TEXT_BYTES)
    with refused("too_large"):
        domain.check_text("é" * (domain.MAX_TEXT_BYTES // 2 + 1))
    with refused("empty"):
        domain.check_text("   ")


def test_sequence_numbers_follow_without_gaps() -> None:
    seqs = [0]
    for _ in range(100):
        seqs.append(domain.next_seq(seqs[-1]))
    assert seqs == list(range(101))


def test_only_the_sender_edits_and_not_after_deletion() -> None:
    domain.check_edit("alice", "alice", deleted=False)
    with refused("forbidden"):
        domain.check_edit("bob", "alice", deleted=False)
    with refused("deleted"):
        domain.check_edit("alice", "alice", deleted=True)


def test_the_sender_or_a_moderator_deletes() -> None:
    assert domain.may_delete("alice", "member", "alice")
    assert domain.may_delete("bob", "admin", "alice")
    assert not domain.may_delete("bob", "member", "alice")
    assert not domain.may_delete("bob", None, "alice")


# -- who reads what -----------------------------------------------------------------------


def test_a_member_reads_from_joining_to_leaving() -> None:
    periods = [Access(after_seq=5, until_seq=10)]
    assert [seq for seq in range(1, 15) if domain.may_read(periods, seq)] == [6, 7, 8, 9, 10]
    assert domain.readable_up_to(periods, last_seq=14) == 10


def test_a_removed_and_re_added_member_misses_what_was_sent_in_between() -> None:
    periods = [Access(after_seq=0, until_seq=3), Access(after_seq=7)]
    assert [seq for seq in range(1, 10) if domain.may_read(periods, seq)] == [1, 2, 3, 8, 9]
    assert domain.readable_up_to(periods, last_seq=9) == 9
    assert domain.readable_up_to(periods, last_seq=7) == 3


# -- receipts -----------------------------------------------------------------------------


def test_receipts_only_move_forward_and_read_implies_delivered() -> None:
    start = Receipt()
    delivered = start.advance("delivered", 4, readable=10)
    assert delivered == Receipt(delivered_seq=4, read_seq=0)
    read = delivered.advance("read", 2, readable=10)
    assert read == Receipt(delivered_seq=4, read_seq=2)
    assert read.advance("delivered", 3, readable=10) is None  # nothing new
    assert read.advance("read", 7, readable=10) == Receipt(delivered_seq=7, read_seq=7)


def test_receipts_name_readable_messages_only() -> None:
    with refused("invalid_receipt"):
        Receipt().advance("read", 11, readable=10)
    with refused("invalid_receipt"):
        Receipt().advance("read", 0, readable=10)


# -- sync ---------------------------------------------------------------------------------


def test_sync_tokens_round_trip_and_reject_what_they_did_not_give() -> None:
    assert domain.parse_sync_token(domain.sync_token(1234)) == 1234
    assert domain.parse_sync_token(None) == 0
    for bad in ("1234", "s", "s-1", "sabc", "x12", "s" + "9" * 19):
        with refused("invalid_token"):
            domain.parse_sync_token(bad)


def test_a_sync_within_retention_continues_where_it_left_off() -> None:
    window = domain.sync_window(since=100, head=1100, pruned_through=0, missed=1000, catch_up_max=10_000)
    assert window == domain.SyncWindow(start=100, limited=False)


def test_a_sync_past_retention_is_limited_from_the_oldest_kept() -> None:
    window = domain.sync_window(since=10, head=1100, pruned_through=599, missed=400, catch_up_max=10_000)
    assert window == domain.SyncWindow(start=599, limited=True)
    # right at the edge nothing is missing
    assert not domain.sync_window(since=599, head=1100, pruned_through=599, missed=400, catch_up_max=10_000).limited


def test_a_sync_too_far_behind_jumps_to_the_latest_and_says_so() -> None:
    window = domain.sync_window(since=0, head=50_000, pruned_through=0, missed=10_001, catch_up_max=10_000)
    assert window == domain.SyncWindow(start=None, limited=True)


def test_a_token_from_the_future_is_refused() -> None:
    with refused("invalid_token"):
        domain.sync_window(since=11, head=10, pruned_through=0, missed=0, catch_up_max=10_000)


# -- the key directory --------------------------------------------------------------------


def test_a_new_identity_key_replaces_the_device_and_the_same_one_does_not() -> None:
    assert not domain.replaces_identity(None, "k1")
    assert not domain.replaces_identity("k1", "k1")
    assert domain.replaces_identity("k1", "k2")


def test_another_signing_key_replaces_the_device_and_a_first_or_none_does_not() -> None:
    assert not domain.replaces_signing_key(None, "s1")  # a device from before signing keys gets one
    assert not domain.replaces_signing_key("s1", None)  # an upload of one-time prekeys alone
    assert not domain.replaces_signing_key("s1", "s1")
    assert domain.replaces_signing_key("s1", "s2")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_a_signed_prekey_holds_only_with_its_signing_keys_signature_over_its_bytes() -> None:
    signer, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    prekey, another_prekey = os.urandom(32), os.urandom(32)
    signing_key = b64(signer.public_key().public_bytes_raw())
    domain.check_signed_prekey(signing_key, b64(prekey), b64(signer.sign(prekey)))
    for key, signed, signature in (
        (signing_key, another_prekey, signer.sign(prekey)),  # the prekey swapped on the way
        (signing_key, prekey, other.sign(prekey)),  # signed by another key
        (b64(other.public_key().public_bytes_raw()), prekey, signer.sign(prekey)),
        (signing_key, prekey, bytes(64)),
    ):
        with refused("invalid_signature"):
            domain.check_signed_prekey(key, b64(signed), b64(signature))


# -- files --------------------------------------------------------------------------------


def test_files_split_into_full_chunks_and_a_last_one_with_the_rest() -> None:
    assert domain.chunk_count(10, 4) == 3
    assert domain.chunk_count(8, 4) == 2
    assert [domain.expected_chunk_size(10, index, 4) for index in range(3)] == [4, 4, 2]
    with refused("invalid_chunk"):
        domain.expected_chunk_size(10, 3, 4)


def test_a_chunk_must_have_its_length_and_its_hash() -> None:
    domain.check_chunk(10, 2, 4, 2, "ab", "ab")
    with refused("invalid_chunk"):
        domain.check_chunk(10, 2, 4, 4, "ab", "ab")
    with refused("chunk_corrupt"):
        domain.check_chunk(10, 0, 4, 4, "ab", "cd")


def test_missing_chunks_are_the_ones_not_received() -> None:
    assert domain.missing_chunks(5, [0, 2, 2, 4]) == [1, 3]
    assert domain.missing_chunks(2, [0, 1]) == []
