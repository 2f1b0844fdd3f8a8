"""What a node's connection forwards in batches: heartbeats to the registry (what its contract
accepts, split to fit it, and a keepalive when no node spoke), job reports to the scheduler."""

from __future__ import annotations

import random
from collections import deque
from typing import Any, cast

from faststream.nats import NatsBroker

from fog_gateway.node_link import HeartbeatRelay, batch_bodies, take_batch
from fog_gateway.scheduler_gate import RETRY_MAX_S, RETRY_S, RetryDelays
from fog_shared.commands.registry import HEARTBEATS, MAX_BATCH_ITEMS, Heartbeat, HeartbeatBatch
from fog_shared.commands.scheduler import MAX_REPORTS, REPORTS_OUTPUT_BUDGET, Finished, Started

NODE = "nd_" + "a" * 26


def heartbeat(node_id: str, seq: int = 1) -> Heartbeat:
    usage = {"cpu_percent": 1.0, "memory_used_bytes": 1, "disk_used_bytes": 1}
    return Heartbeat.model_validate({"node_id": node_id, "seq": seq, "running_jobs": 0, "usage": usage})


class Published:
    def __init__(self) -> None:
        self.batches: list[HeartbeatBatch] = []

    async def publish(self, body: bytes, *, subject: str) -> None:
        assert subject == HEARTBEATS
        self.batches.append(HeartbeatBatch.model_validate_json(body))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def relay_with(published: Published, clock: Clock) -> HeartbeatRelay:
    return HeartbeatRelay(cast(NatsBroker, cast(Any, published)), source="gw-1", keepalive_s=1.0, clock=clock)


async def test_a_flush_publishes_the_latest_beat_per_node_and_the_departed() -> None:
    published, clock = Published(), Clock()
    relay = relay_with(published, clock)
    other = NODE.replace("a", "b")
    relay.beat(heartbeat(NODE, 1))
    relay.beat(heartbeat(NODE, 2))
    relay.beat(heartbeat(other))
    relay.depart(other)
    await relay.flush()
    [batch] = published.batches
    assert batch.source == "gw-1"
    assert [(b.node_id, b.seq) for b in batch.heartbeats] == [(NODE, 2)]
    assert batch.departed == [other]


async def test_an_idle_gateway_still_publishes_an_empty_batch_every_keepalive() -> None:
    published, clock = Published(), Clock()
    relay = relay_with(published, clock)
    await relay.flush()
    clock.now += 0.5
    await relay.flush()
    clock.now += 0.6
    await relay.flush()
    assert [(b.heartbeats, b.departed) for b in published.batches] == [([], []), ([], [])]


def test_large_flushes_are_split_to_the_contracts_limit() -> None:
    beats = [heartbeat(f"nd_{i:026d}").model_dump_json() for i in range(MAX_BATCH_ITEMS + 1)]
    batches = [HeartbeatBatch.model_validate_json(body) for body in batch_bodies("gw-1", beats, ["nd_gone"])]
    assert [len(b.heartbeats) for b in batches] == [MAX_BATCH_ITEMS, 1]
    assert [b.departed for b in batches] == [["nd_gone"], []]


def finished(job: int, output: str = "") -> Finished:
    return Finished(job_id=f"job-{job}", attempt=1, outcome="succeeded", exit_code=0, duration_s=0.1, output=output)


def test_reports_go_in_order_in_batches_bounded_by_count_and_output() -> None:
    queue: deque[Started | Finished] = deque([Started(job_id="job-0", attempt=1), finished(0)])
    queue.extend(finished(i) for i in range(1, MAX_REPORTS + 5))
    first = take_batch(queue)
    assert len(first) == MAX_REPORTS
    assert [type(r).__name__ for r in first[:2]] == ["Started", "Finished"]
    assert [r.job_id for r in take_batch(queue)] == [f"job-{i}" for i in range(MAX_REPORTS - 1, MAX_REPORTS + 5)]
    half = "x" * (REPORTS_OUTPUT_BUDGET // 2 + 1)
    queue.extend([finished(1, half), finished(2, half), finished(3)])
    assert [r.job_id for r in take_batch(queue)] == ["job-1"], "two halves are over the output budget"
    assert [r.job_id for r in take_batch(queue)] == ["job-2", "job-3"]


def test_retries_wait_longer_each_time_up_to_a_cap_each_wait_spread_over_its_upper_half() -> None:
    delays = RetryDelays(random.Random(7))
    waits = [next(delays) for _ in range(12)]
    ceilings = [min(RETRY_S * 2**n, RETRY_MAX_S) for n in range(12)]
    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert delays.tries == 12
    spread = {round(next(RetryDelays(random.Random(seed))), 3) for seed in range(20)}
    assert len(spread) > 10, "connections that failed together do not all retry at the same moment"
