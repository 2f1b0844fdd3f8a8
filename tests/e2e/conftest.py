"""Against a deployed Fog (``FOG_E2E_GATEWAY_URL``), skip the tests that need a local stack."""

from __future__ import annotations

import pytest
from devstack_driver import TARGET_URL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TARGET_URL is None:
        return
    skip = pytest.mark.skip(
        reason=f"needs a local dev stack's processes, logs, NATS or Postgres; target is {TARGET_URL}"
    )
    for item in items:
        if "local_stack" in item.keywords:
            item.add_marker(skip)
