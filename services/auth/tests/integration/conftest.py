"""What the auth service's integration tests share: a migrated schema of their own with a signing key, and
argon2 at its cheapest (hashing speed is not under test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from fog_auth import service
from fog_auth.app import MIGRATIONS
from fog_auth.passwords import Passwords, cheap_hasher_for_tests
from fog_auth.service import AuthConfig
from fog_shared.testing.plugin import ServiceDbFactory

#: when the first signing key was made: no test's clock is earlier
KEY_MADE_AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
async def conn(service_db: ServiceDbFactory) -> AsyncIterator[asyncpg.Connection]:
    db = await service_db("auth", MIGRATIONS)
    connection = await asyncpg.connect(db.dsn)
    await service.ensure_signing_key(connection, AuthConfig(), now=KEY_MADE_AT)
    yield connection
    await connection.close()


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(cheap_hasher_for_tests())
