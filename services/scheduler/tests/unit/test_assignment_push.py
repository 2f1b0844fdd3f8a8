"""A placement's push is cut into parts the gateways accept: each within the byte budget and the
contract's count, every assignment once, in order."""

from __future__ import annotations

from typing import Any

from fog_scheduler.assignment_push import push_bodies
from fog_shared.commands.gateway import PUSH_MAX_ASSIGNMENTS, AssignmentPush


def placed(count: int, env_bytes: int = 0) -> list[dict[str, Any]]:
    return [
        {"node_id": "n1", "assignment": {"job_id": f"j{i}", "attempt": 1, "command": ["true"],
                                         "env": {"PAD": "x" * env_bytes}, "timeout_s": 60.0,
                                         "resources": {"cpu_cores": 1.0, "memory_bytes": 1 << 20, "gpus": 0}}}
        for i in range(count)
    ]  # fmt: skip


def job_ids(bodies: list[bytes]) -> list[str]:
    return [a.assignment.job_id for body in bodies for a in AssignmentPush.model_validate_json(body).assignments]


def test_a_small_batch_is_one_push() -> None:
    bodies = list(push_bodies(placed(3)))
    assert len(bodies) == 1
    assert job_ids(bodies) == ["j0", "j1", "j2"]


def test_a_batch_over_the_byte_budget_is_split_so_each_part_fits() -> None:
    bodies = list(push_bodies(placed(10, env_bytes=1000), budget=3000))
    assert len(bodies) > 1
    assert all(len(body) <= 3000 for body in bodies)
    assert job_ids(bodies) == [f"j{i}" for i in range(10)]


def test_a_batch_over_the_contracts_count_is_split() -> None:
    bodies = list(push_bodies(placed(PUSH_MAX_ASSIGNMENTS + 1)))
    assert len(bodies) == 2
    assert len(job_ids(bodies)) == PUSH_MAX_ASSIGNMENTS + 1


def test_one_assignment_over_the_budget_still_goes_alone() -> None:
    [body] = push_bodies(placed(1, env_bytes=5000), budget=1000)
    assert job_ids([body]) == ["j0"]
