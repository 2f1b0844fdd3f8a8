"""argon2id password hashing, off the event loop and bounded.

One hash with argon2-cffi's defaults takes ~64 MiB and ~130 ms here (DESIGN §8), so a burst of
logins could exhaust memory or starve the loop: hashes run in worker threads, at most
``max_concurrent`` at a time. Tests pass cheap parameters; production never does.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None, *, max_concurrent: int = 2) -> None:
        self.hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored_hash, password)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with weaker parameters than today's: rehash at login."""
        return self.hasher.check_needs_rehash(stored_hash)

    async def burn(self) -> None:
        """Spend the time of one verification, so an unknown account answers as slowly as a known one."""
        await self.verify(await self._dummy(), "not the password")

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("fog-timing-equaliser")
        return self._dummy_hash


def cheap_hasher_for_tests() -> PasswordHasher:
    """Minimal argon2id cost: for tests only, where hashing speed is not under test."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
