"""fogctl's commands talking to a scripted gateway instead of a real one (shared by ``cli/tests``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fog_client import FogClient
from fogctl import account

Handler = Callable[[httpx.Request], httpx.Response]


def script_gateway(monkeypatch: pytest.MonkeyPatch, handler: Handler, url: str | None = None) -> None:
    """Every command's client is answered by ``handler`` (and, when ``url`` is given, must be pointed at it)."""
    transport = httpx.MockTransport(handler)

    def new_client(base_url: str, **session: Any) -> FogClient:
        assert url is None or base_url == url, base_url
        return FogClient(base_url, transport=transport, **session)

    monkeypatch.setattr(account, "new_client", new_client)
