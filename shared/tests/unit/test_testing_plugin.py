"""The test plugin lets the apps a test built die with it."""

from __future__ import annotations

import gc
import weakref

import httpx
from fastapi import Depends, FastAPI

from fog_shared.testing.plugin import forget_classified_callables


class _Runtime:
    """Stands for what a service's endpoints close over (its broker, its pool)."""


async def _app_called_once() -> weakref.ref[_Runtime]:
    runtime = _Runtime()

    async def who() -> _Runtime:
        return runtime

    app = FastAPI()

    @app.get("/", dependencies=[Depends(who)])
    async def root() -> dict[str, bool]:
        return {"ok": isinstance(runtime, _Runtime)}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        assert (await client.get("/")).json() == {"ok": True}
    return weakref.ref(runtime)


async def test_an_app_called_in_a_test_outlives_it_until_fastapis_caches_are_forgotten() -> None:
    runtime = await _app_called_once()
    gc.collect()
    assert runtime() is not None, "FastAPI's caches no longer hold endpoints: the plugin's teardown can go"

    forget_classified_callables()
    gc.collect()

    assert runtime() is None
