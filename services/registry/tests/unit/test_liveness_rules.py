"""The liveness state machine, flap damping, restart grace, reputation and labels patches: pure rules, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fog_registry import domain
from fog_registry.domain import DOWN, DRAINING, READY, SUSPECT, LivenessPolicy, NodeLiveness, Reputation
from fog_shared.events.scheduler import JobCompleted, JobFailed

POLICY = LivenessPolicy.for_interval(5.0)  # suspect after 7.5 s, down after 20 s
USAGE = {"cpu_percent": 1.0, "memory_used_bytes": 1, "disk_used_bytes": 1}


def beat(node: NodeLiveness, now: float) -> str | None:
    moved = domain.on_heartbeat(node, now=now, seq=1, running_jobs=0, usage=USAGE, policy=POLICY)
    return moved.status if moved else None


def tick(node: NodeLiveness, now: float, grace_until: float = 0.0, excused_s: float = 0.0) -> str | None:
    moved = domain.on_tick(node, now=now, grace_until=grace_until, policy=POLICY, excused_s=excused_s)
    return moved.status if moved else None


def test_a_new_node_is_ready_on_its_first_heartbeat() -> None:
    node = NodeLiveness("n1", DOWN)
    assert beat(node, 0.0) == READY
    assert beat(node, 5.0) is None, "no event for a heartbeat that changes nothing"


def test_silence_makes_a_node_suspect_then_down_once_each() -> None:
    node = NodeLiveness("n1", DOWN)
    beat(node, 0.0)
    assert [tick(node, t) for t in (5.0, 7.0)] == [None, None]
    assert tick(node, 8.0) == SUSPECT
    assert [tick(node, t) for t in (10.0, 19.0)] == [None, None]
    assert tick(node, 21.0) == DOWN
    assert tick(node, 40.0) is None
    assert beat(node, 41.0) == READY


def test_no_node_is_suspected_during_the_restart_grace() -> None:
    node = NodeLiveness("n1", READY, last_seen=0.0)
    assert tick(node, 30.0, grace_until=40.0) is None
    assert beat(node, 35.0) is None
    assert tick(node, 41.0, grace_until=40.0) is None, "it heartbeat during the grace"


def test_a_gateway_stall_is_not_held_against_its_nodes() -> None:
    assert domain.excused_silence(0.25, POLICY) == 0.0, "a gateway publishing normally excuses nothing"
    assert domain.excused_silence(3.0, POLICY) == 2.0, "quiet beyond its 1 s keepalive is the gateway's"
    assert domain.excused_silence(60.0, POLICY) == 5.0, "at most one interval: a gone gateway is no excuse"
    node = NodeLiveness("n1", DOWN)
    beat(node, 0.0)
    # Its gateway stalled 3 s just as the beat due at 5 s was sent: at 8 s it looks 8 s silent.
    assert tick(node, 8.0, excused_s=domain.excused_silence(3.0, POLICY)) is None
    assert beat(node, 8.1) is None, "the delayed beat arrives in the burst after the stall"
    # A node behind a gateway gone for good goes suspect one interval later than usual, then down.
    assert tick(node, 8.1 + 7.6, excused_s=5.0) is None
    assert tick(node, 8.1 + 12.6, excused_s=5.0) == SUSPECT
    assert tick(node, 8.1 + 25.1, excused_s=5.0) == DOWN


def test_a_registry_that_hears_no_gateway_at_all_is_deaf() -> None:
    assert not domain.deaf(1.9, POLICY), "a gateway publishes at least every second: not yet a silence"
    assert domain.deaf(2.1, POLICY), "nobody at all for two keepalives: the registry cannot hear"


def test_a_flapping_node_is_not_announced_on_every_bounce() -> None:
    node = NodeLiveness("n1", DOWN)
    announced, now = [], 0.0
    for _ in range(6):  # miss one beat, come back, over and over
        announced.append(beat(node, now))
        now += 8.0
        announced.append(tick(node, now))
        now += 0.5
    changes = [a for a in announced if a is not None]
    assert changes == [READY, SUSPECT] * 4, "after four quick lapses it stays suspect instead of bouncing"
    # Steady heartbeats let the penalty decay; then it is announced ready again, once.
    later = [beat(node, now + t) or tick(node, now + t + 0.1) for t in range(0, 200, 5)]
    assert [s for s in later if s is not None] == [READY]


def test_drain_and_goodbye() -> None:
    node = NodeLiveness("n1", DOWN)
    beat(node, 0.0)
    moved = domain.on_drain(node)
    assert moved is not None
    assert moved.status == DRAINING
    assert tick(node, 8.0) == SUSPECT
    assert beat(node, 9.0) == DRAINING, "a drained node stays draining when it comes back"
    node.draining = False  # its drain ended (the leader mirrors the flag from the table)
    assert tick(node, 17.0) == SUSPECT
    assert beat(node, 18.0) == READY, "a resumed node comes back ready"
    left = domain.on_departure(node)
    assert left is not None
    assert (left.status, left.counts_against) == (DOWN, False)


def test_reputation_moves_with_evidence_and_decays_to_neutral() -> None:
    fresh = Reputation()
    assert fresh.score == 0.5
    good = fresh
    for day in range(10):
        good = good.record(success=True, weight=1.0, now=day * 86_400.0, half_life_s=domain.REPUTATION_HALF_LIFE_S)
    assert good.score > 0.85
    bad = good.record(success=False, weight=5.0, now=10 * 86_400.0, half_life_s=domain.REPUTATION_HALF_LIFE_S)
    assert bad.score < good.score
    forgotten = bad.decayed(400 * 86_400.0, domain.REPUTATION_HALF_LIFE_S)
    assert abs(forgotten.score - 0.5) < 0.01
    assert domain.worth_announcing(0.5, 0.53)
    assert not domain.worth_announcing(0.5, 0.51)


def test_who_sees_a_node() -> None:
    def sees(kind: str, user_id: str | None = None, node_id: str | None = None, roles: tuple[str, ...] = ()) -> bool:
        return domain.may_see(
            node_id="n1", owner_id="owner", kind=kind, user_id=user_id, by_node_id=node_id, roles=list(roles)
        )

    assert sees("user", "owner", roles=("provider",))
    assert sees("api_key", "owner", roles=("user",))
    assert sees("user", "admin-1", roles=("admin",))
    assert not sees("user", "someone", roles=("provider", "user"))
    assert sees("node", node_id="n1", roles=("node",))
    assert not sees("node", node_id="n2", roles=("node",))


def test_a_labels_patch_sets_removes_and_keeps_and_is_bounded() -> None:
    current = {"site": "a", "gpu": "none", "rack": "3"}
    assert domain.patched_labels(current, {"gpu": "a100", "rack": None, "zone": "z1"}, most=32) == {
        "gpu": "a100", "site": "a", "zone": "z1"
    }  # fmt: skip
    assert domain.patched_labels(current, {"absent": None}, most=32) == current  # removing what is not there
    assert domain.patched_labels(current, {"a": "1", "site": None}, most=3) == {"a": "1", "gpu": "none", "rack": "3"}
    with pytest.raises(domain.TooManyLabels, match="at most 3 labels; this would leave it 4"):
        domain.patched_labels(current, {"a": "1"}, most=3)


def test_a_drain_and_its_end_move_an_alive_node_at_once_and_leave_the_others_to_their_next_beat() -> None:
    drained = domain.drain_change("n1", READY, draining=True)
    resumed = domain.drain_change("n1", DRAINING, draining=False)
    assert drained is not None
    assert resumed is not None
    assert [(drained.previous, drained.status), (resumed.previous, resumed.status)] == [
        (READY, DRAINING), (DRAINING, READY)
    ]  # fmt: skip
    for status in (SUSPECT, DOWN):
        assert domain.drain_change("n1", status, draining=True) is None
        assert domain.drain_change("n1", status, draining=False) is None
    assert domain.drain_change("n1", DRAINING, draining=True) is None  # drained again: nothing new
    assert domain.drain_change("n1", READY, draining=False) is None


def test_contributions_count_each_nodes_attempts_by_outcome_with_their_time() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    events = [
        JobCompleted(job_id="j1", node_id="a", exit_code=0, completed_at=now, duration_s=10.0, cpu_s=4.0),
        JobFailed(job_id="j2", node_id="a", reason="exit 1", node_fault=False, failed_at=now, duration_s=1.0),
        JobFailed(job_id="j3", node_id="a", reason="lost", node_fault=True, failed_at=now),
        JobFailed(job_id="j4", node_id=None, reason="never placed", node_fault=False, failed_at=now),
        JobCompleted(job_id="j5", node_id="b", exit_code=0, completed_at=now),  # an event older than the times
    ]
    assert domain.contributions(events) == {
        "a": domain.Given(succeeded=1, failed=1, lost=1, run_s=11.0, cpu_s=4.0),
        "b": domain.Given(succeeded=1),
    }
