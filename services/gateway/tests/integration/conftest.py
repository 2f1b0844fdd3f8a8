"""Fixtures of the gateway's integration tests: see ``gateway_stack``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from gateway_stack import Stack, open_stack

from fog_shared.testing.plugin import Provisioner, Servers, ServiceDbFactory


@pytest.fixture
async def stack(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> AsyncIterator[Stack]:
    async for opened in open_stack(fog_servers, service_db, provision_topology):
        yield opened
