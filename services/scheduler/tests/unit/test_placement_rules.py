"""Placement: filters, scores, explanations, retries — the pure part of the scheduler."""

from __future__ import annotations

from fog_scheduler import domain
from fog_scheduler.domain import NodeCapacity, PlacementPolicy, Request


def node(
    node_id: str, cores: float = 4, memory: int = 8 << 30, *, status: str = "ready", **extra: object
) -> NodeCapacity:
    values: dict[str, object] = {"gpus": 0, "arch": "x86_64", "region": "eu", "labels": {}, **extra}
    return NodeCapacity(node_id, status, cores, memory, **values)  # type: ignore[arg-type]


def test_filters_say_why_each_node_is_left_out() -> None:
    nodes = [
        node("down", status="down"),
        node("arm", arch="aarch64"),
        node("us", region="us"),
        node("small", cores=1, labels={"site": "shop"}),
        node("nolabel"),
        node("fits", labels={"site": "shop"}),
    ]
    request = Request(cpu_cores=2, memory_bytes=1 << 30, gpus=0, labels={"site": "shop"}, region="eu", arch="x86_64")
    placed = domain.place(request, nodes)
    assert placed.node_id == "fits"
    assert placed.filtered == {
        "node down": 1, "architecture is not x86_64": 1, "region is not eu": 1, "too few CPU cores": 1,
        "label site=shop missing": 1,
    }  # fmt: skip


def test_a_job_nothing_can_ever_fit_is_not_waiting_for_capacity() -> None:
    placed = domain.place(Request(cpu_cores=64, memory_bytes=1, gpus=0), [node("a"), node("b")])
    assert placed.node_id is None
    assert not placed.waits_for_capacity
    assert placed.summary(2) == "no node fits: 2 examined (2 too few CPU cores)"


def test_a_job_goes_only_where_its_network_is_given() -> None:
    own_only, cut_off_only = node("own"), node("cut", networks=frozenset({"none"}))
    both = node("both", networks=frozenset({"host", "none"}))
    isolated = Request(cpu_cores=1, memory_bytes=1, gpus=0, network="none")
    placed = domain.place(isolated, [own_only, both])
    assert placed.node_id == "both"
    assert placed.filtered == {"no isolated network for jobs": 1}
    nowhere = domain.place(isolated, [own_only])
    assert (nowhere.node_id, nowhere.waits_for_capacity) == (None, False), "a node never changes its networks"
    hosted = domain.place(Request(cpu_cores=1, memory_bytes=1, gpus=0), [cut_off_only, both])
    assert hosted.node_id == "both", "a node whose owner gives jobs no network of its own takes none that want it"
    assert hosted.filtered == {"no host network for jobs": 1}


def test_a_job_that_states_its_disk_goes_where_the_disk_for_jobs_has_that_much_left() -> None:
    small, large = node("small", disk_bytes=10 << 30), node("large", disk_bytes=80 << 30)
    big = Request(cpu_cores=1, memory_bytes=1, gpus=0, disk_bytes=50 << 30)
    placed = domain.place(big, [small, large])
    assert (placed.node_id, placed.filtered) == ("large", {"too little disk": 1})
    large.take(big)
    again = domain.place(big, [small, large])
    assert again.node_id is None
    assert again.filtered == {"too little disk": 1, "disk in use": 1}
    assert again.waits_for_capacity, "the first one's end gives its disk back"
    large.give_back(big)
    assert domain.place(big, [small, large]).node_id == "large"
    # A job that states none is placed by none, even on a node that declared no disk for jobs.
    assert domain.place(Request(cpu_cores=1, memory_bytes=1, gpus=0), [node("full", disk_bytes=0)]).node_id == "full"
    nowhere = domain.place(big, [small])
    assert (nowhere.node_id, nowhere.waits_for_capacity) == (None, False)
    assert nowhere.summary(1) == "no node fits: 1 examined (1 too little disk)"


def test_busy_nodes_make_a_job_wait_for_capacity() -> None:
    busy = node("a", cores=2)
    busy.take(Request(cpu_cores=2, memory_bytes=1, gpus=0))
    placed = domain.place(Request(cpu_cores=1, memory_bytes=1, gpus=0), [busy])
    assert placed.node_id is None
    assert placed.waits_for_capacity
    assert placed.filtered == {"CPU in use": 1}


def test_binpack_fills_the_fuller_node_and_spread_the_emptier() -> None:
    fuller, emptier = node("fuller"), node("emptier")
    fuller.take(Request(cpu_cores=3, memory_bytes=4 << 30, gpus=0))
    request = Request(cpu_cores=1, memory_bytes=1 << 30, gpus=0)
    assert domain.place(request, [fuller, emptier], PlacementPolicy(strategy="binpack")).node_id == "fuller"
    assert domain.place(request, [fuller, emptier], PlacementPolicy(strategy="spread")).node_id == "emptier"


def test_affinity_reputation_and_a_previous_failure_move_the_choice() -> None:
    a, b = node("a", labels={"ssd": "yes"}), node("b")
    request = Request(cpu_cores=1, memory_bytes=1, gpus=0, affinities=(("ssd", "yes", 30),))
    placed = domain.place(request, [a, b])
    assert placed.node_id == "a"
    assert placed.candidates[0]["parts"]["affinity"] == 30
    retry = Request(cpu_cores=1, memory_bytes=1, gpus=0, affinities=(("ssd", "yes", 30),), avoid=frozenset({"a"}))
    assert domain.place(retry, [a, b]).node_id == "b", "a retry prefers a node it has not failed on"
    trusted, doubtful = node("t", reputation=0.9), node("d", reputation=0.1)
    assert domain.place(Request(cpu_cores=1, memory_bytes=1, gpus=0), [doubtful, trusted]).node_id == "t"


def test_large_clusters_score_only_enough_candidates() -> None:
    nodes = [node(f"n{i:05}") for i in range(10_000)]
    placed = domain.place(Request(cpu_cores=1, memory_bytes=1, gpus=0), nodes, PlacementPolicy(enough_candidates=4))
    assert placed.node_id is not None
    assert len(placed.candidates) == 3
    assert placed.filtered == {}


def test_retries_back_off_and_stop() -> None:
    assert [domain.retry_delay_s(1.0, a) for a in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert domain.retry_delay_s(1000.0, 10) == 3600.0
    assert domain.after_failure(1, 3) == "retry"
    assert domain.after_failure(3, 3) == "give up"


def test_a_failures_reason_says_which_attempt_what_happened_and_what_comes_next() -> None:
    def reason(**overrides: object) -> str:
        facts: dict[str, object] = {"attempt": 1, "max_attempts": 3, "timed_out": False, "exit_code": 3,
                                    "error": None, "retry_in_s": 1.0, **overrides}  # fmt: skip
        return domain.failure_reason(**facts)  # type: ignore[arg-type]

    assert reason() == "attempt 1 of 3 failed: exit code 3; tried again in 1 s"
    assert reason(attempt=3, retry_in_s=None) == "attempt 3 of 3 failed: exit code 3; no attempts left"
    killed = reason(exit_code=-9, error="killed by signal 9 (SIGKILL)", retry_in_s=0.5)
    assert killed == "attempt 1 of 3 failed: killed by signal 9 (SIGKILL); tried again in 0.5 s"
    late = reason(timed_out=True, exit_code=None, error="ran past its timeout of 5 s", retry_in_s=None)
    assert late == "attempt 1 of 3 timed out: ran past its timeout of 5 s; not tried again"
    assert reason(exit_code=None, retry_in_s=None, attempt=3).startswith("attempt 3 of 3 failed: no exit code;")
    long = reason(error="x" * 5000)
    assert len(long) < 400
    assert "x" * (domain.REASON_ERROR_CHARS - 1) + "…;" in long


def test_the_room_is_the_most_any_ready_node_has_free_of_each_resource() -> None:
    busy, roomy, gone = (
        node("busy", cores=4, memory=8 << 30),
        node("roomy", cores=2, memory=1 << 30),
        node("gone", cores=64, memory=64 << 30, status="down"),
    )
    busy.take(Request(cpu_cores=3.5, memory_bytes=1 << 30, gpus=0))
    room = domain.Room.of([busy, roomy, gone])
    assert room == domain.Room(cpu_cores=2, memory_bytes=7 << 30, gpus=0, disk_bytes=0)  # a down node offers nothing
    assert room.may_hold(2, 1 << 30, 0)
    assert room.may_hold(0.1 + 0.2 + 1.7, 1, 0), "cores compare with the tolerance placing has"
    assert not room.may_hold(2.5, 1, 0)
    assert not room.may_hold(1, 8 << 30, 0)
    assert not room.may_hold(1, 1, 1)
    assert not room.may_hold(1, 1, 0, disk_bytes=1), "no node declared a disk for jobs"
    assert domain.Room.of([]) == domain.Room(0.0, 0, 0)
    # Per resource, not per node: "may", since no node may have both of the most.
    assert room.may_hold(2, 7 << 30, 0)
    assert domain.place(Request(cpu_cores=2, memory_bytes=7 << 30, gpus=0), [busy, roomy]).node_id is None


def test_the_free_room_of_filling_nodes_says_no_only_when_no_node_has_room() -> None:
    a, b = node("a", cores=2), node("b", cores=1)
    room = domain.FreeRoom([a, b])
    one, two = Request(cpu_cores=1, memory_bytes=1, gpus=0), Request(cpu_cores=2, memory_bytes=1, gpus=0)
    assert room.may_hold(two)
    a.take(one)
    room.taken()
    assert not room.may_hold(two), "a was the only node with two cores free"
    assert room.may_hold(one)
    b.take(one)
    a.take(one)
    room.taken()
    assert not room.may_hold(one)
