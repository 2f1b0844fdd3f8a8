"""``GET /v1/admin/status``: every service with each replica that answers, its checks and what it leads."""

from __future__ import annotations

from typing import Any

from gateway_stack import Stack

from fog_shared.testing.waiting import wait_until

SERVICES = ["auth", "registry", "scheduler", "messaging", "gateway"]


async def _status(stack: Stack, admin: dict[str, str]) -> dict[str, Any]:
    answer = await stack.http.get("/v1/admin/status", headers=stack.bearer(admin))
    assert answer.status_code == 200, answer.text
    status: dict[str, Any] = answer.json()
    return status


def _replicas(status: dict[str, Any], service: str) -> list[dict[str, Any]]:
    [found] = [s for s in status["services"] if s["service"] == service]
    replicas: list[dict[str, Any]] = found["replicas"]
    return replicas


async def test_an_admin_sees_every_service_and_replica_and_who_leads(stack: Stack) -> None:
    user, admin = await stack.register_and_login(), await stack.admin()
    refused = await stack.http.get("/v1/admin/status", headers=stack.bearer(user))
    assert refused.status_code == 403, refused.text

    async def all_in_order() -> dict[str, Any] | None:
        status = await _status(stack, admin)
        return status if status["ok"] else None

    status = await wait_until(all_in_order, timeout=10, what="every service answering, all in order")
    assert [s["service"] for s in status["services"]] == SERVICES
    for service in SERVICES:
        [replica] = _replicas(status, service)
        assert set(replica["checks"].values()) == {"ok"}, replica
        assert "background_tasks" in replica["checks"]
    assert _replicas(status, "scheduler")[0]["facts"] == {"leads_placement": True}
    assert _replicas(status, "registry")[0]["facts"] == {"leads_liveness": True}
    assert _replicas(status, "gateway")[0]["facts"] == {"node_connections": 0}

    stop_second = await stack.start_registry()  # a second replica: both answer, one leads
    try:
        status = await _status(stack, admin)
        leads = sorted(replica["facts"]["leads_liveness"] for replica in _replicas(status, "registry"))
        assert leads == [False, True]
    finally:
        await stop_second()

    other_gateway = await stack.open_gateway()  # a second gateway replica: whichever is asked lists both
    for asked in (stack.http, other_gateway):
        answer = await asked.get("/v1/admin/status", headers=stack.bearer(admin))
        assert len(_replicas(answer.json(), "gateway")) == 2, answer.text

    async with stack.scheduler_away():
        status = await _status(stack, admin)
        assert _replicas(status, "scheduler") == []
        assert status["ok"] is False
