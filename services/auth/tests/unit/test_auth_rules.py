"""Password policy, lockout growth, API-key scope, and bounded argon2id hashing."""

from __future__ import annotations

import asyncio

import pytest
from argon2 import PasswordHasher

from fog_auth.domain import check_new_password, check_password, lockout_seconds, scope_allowed
from fog_auth.passwords import Passwords, cheap_hasher_for_tests


@pytest.mark.parametrize(
    ("password", "codes"),
    [
        ("correct horse battery", []),
        ("short", ["too_short"]),
        ("password1234", ["too_common"]),
        ("aaaaaaaaaaaaaaaa", ["too_common"]),
        ("alice-is-great-2026", ["contains_email"]),
        ("x" * 300 + "yz", ["too_long"]),
    ],
)
def test_password_policy(password: str, codes: list[str]) -> None:
    assert [p.code for p in check_password(password, email="alice@example.org")] == codes


def test_lockout_grows_after_the_free_attempts_and_is_capped() -> None:
    assert [lockout_seconds(n) for n in range(5)] == [0, 0, 0, 0, 0]
    assert [lockout_seconds(n) for n in (5, 6, 7)] == [30, 60, 120]
    assert lockout_seconds(50) == 3600


def test_an_api_key_cannot_exceed_its_owners_roles() -> None:
    assert scope_allowed({"user"}, {"user", "provider"})
    assert not scope_allowed({"admin"}, {"user"})
    assert not scope_allowed({"root"}, {"root"})


class CountingHasher(PasswordHasher):
    """Counts hashes in progress at once, to observe the bound from the inside."""

    running = 0
    peak = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        CountingHasher.running += 1
        CountingHasher.peak = max(CountingHasher.peak, CountingHasher.running)
        try:
            return super().hash(password, salt=salt)
        finally:
            CountingHasher.running -= 1


async def test_hashing_verifies_and_never_runs_more_than_the_bound_at_once() -> None:
    cheap = cheap_hasher_for_tests()
    hasher = CountingHasher(time_cost=cheap.time_cost, memory_cost=cheap.memory_cost, parallelism=cheap.parallelism)
    passwords = Passwords(hasher, max_concurrent=2)
    hashes = await asyncio.gather(*(passwords.hash(f"secret number {n}") for n in range(8)))
    assert 1 <= CountingHasher.peak <= 2
    assert await passwords.verify(hashes[3], "secret number 3")
    assert not await passwords.verify(hashes[3], "secret number 4")
    assert not await passwords.verify("not-a-hash", "secret number 3")


def test_a_new_password_passes_the_policy_and_is_not_the_current_one() -> None:
    assert check_new_password("a brand new passphrase", email="alice@example.org", current="old passphrase!") == []
    codes = [p.code for p in check_new_password("same passphrase", email="a@b.org", current="same passphrase")]
    assert codes == ["unchanged"]
    # NFKC: a full-width twin of the current password is the same password
    codes = [p.code for p in check_new_password("ｓａｍｅ passphrase", email="a@b.org", current="same passphrase")]
    assert codes == ["unchanged"]
    codes = [p.code for p in check_new_password("short", email="a@b.org", current="same passphrase")]
    assert codes == ["too_short"]
