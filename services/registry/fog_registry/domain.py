"""Pure rules of the registry service: synchronous, no I/O, no clock, no uuid4 (all passed in).

Liveness is a small state machine per node, fed by heartbeats and by a periodic tick:

* ``ready`` — heartbeating; takes work (``draining`` instead once its owner asked to drain);
* ``suspect`` — no heartbeat for ``suspect_after_s`` (one missed interval, with slack);
* ``down`` — silent for ``down_after_s`` (the grace period), or it said goodbye.

A heartbeat brings a suspect or down node back, unless it flaps: every lapse adds to a penalty
that halves every ``flap_half_life_s``; a node whose penalty passes ``flap_suppress_at`` stays
announced as it is (no event per bounce) until the penalty has decayed under ``flap_reuse_at``
while it keeps heartbeating (route-flap damping, as BGP does it). After the registry (re)starts,
no node is suspected before ``restart_grace_s``: heartbeats missed while it was away are not the
nodes' fault. For the same reason a node is not blamed for the silence of the gateway that
relays its beats: gateways publish a batch at least every ``source_keepalive_s``, and whatever
silence of theirs goes beyond that (up to one interval) is taken off their nodes' silence. And when
no gateway at all is heard, the registry itself is deaf (``deaf``): nobody is suspected until it
hears again, and then not before another ``restart_grace_s``.

The import-linter contract in pyproject.toml keeps asyncpg, nats, faststream and HTTP out of here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from fog_shared.events import Event
from fog_shared.events.scheduler import JobCompleted, JobFailed

READY, SUSPECT, DOWN, DRAINING, DEREGISTERED = "ready", "suspect", "down", "draining", "deregistered"
ALIVE = frozenset({READY, DRAINING})


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    interval_s: float = 5.0
    suspect_after_s: float = 7.5
    down_after_s: float = 20.0
    restart_grace_s: float = 20.0
    flap_half_life_s: float = 60.0
    flap_suppress_at: float = 3.0
    flap_reuse_at: float = 1.5
    #: the longest a live gateway stays quiet (it publishes an empty batch when no node spoke)
    source_keepalive_s: float = 1.0

    @classmethod
    def for_interval(cls, interval_s: float) -> LivenessPolicy:
        """Suspect after one missed beat (with half an interval of slack), down after four."""
        return cls(
            interval_s=interval_s,
            suspect_after_s=1.5 * interval_s,
            down_after_s=4 * interval_s,
            restart_grace_s=4 * interval_s,
        )


@dataclass(frozen=True, slots=True)
class Transition:
    node_id: str
    previous: str
    status: str
    reason: str
    #: it went silent on its own (not a clean goodbye): evidence against its reliability
    counts_against: bool = False


@dataclass(slots=True)
class NodeLiveness:
    """What the registry keeps in memory per node; ``now`` values are a monotonic clock."""

    node_id: str
    announced: str
    draining: bool = False
    last_seen: float | None = None
    penalty: float = 0.0
    penalty_at: float = 0.0
    suppressed: bool = False
    seq: int = 0
    running_jobs: int = 0
    #: the gateway that relayed its latest beat
    source: str | None = None
    usage: dict[str, float] | None = field(default=None)
    #: what its agent said it is (``fog-agent/0.4.0``), as of its latest beat
    agent: str | None = None

    def alive_status(self) -> str:
        return DRAINING if self.draining else READY

    def decayed_penalty(self, now: float, half_life_s: float) -> float:
        return self.penalty * math.pow(0.5, max(0.0, now - self.penalty_at) / half_life_s)

    def _add_penalty(self, amount: float, now: float, policy: LivenessPolicy) -> None:
        self.penalty = self.decayed_penalty(now, policy.flap_half_life_s) + amount
        self.penalty_at = now
        if self.penalty >= policy.flap_suppress_at:
            self.suppressed = True

    def _move(self, status: str, reason: str, *, counts_against: bool = False) -> Transition | None:
        if status == self.announced:
            return None
        transition = Transition(self.node_id, self.announced, status, reason, counts_against)
        self.announced = status
        return transition


def on_heartbeat(
    node: NodeLiveness, *, now: float, seq: int, running_jobs: int, usage: dict[str, float], policy: LivenessPolicy
) -> Transition | None:
    node.last_seen, node.seq, node.running_jobs, node.usage = now, seq, running_jobs, usage
    if node.announced in ALIVE:
        return None
    if node.suppressed:
        if node.decayed_penalty(now, policy.flap_half_life_s) >= policy.flap_reuse_at:
            return None  # flapping: stays announced as it was until it has been steady a while
        node.suppressed = False
    return node._move(node.alive_status(), "heartbeat")


def excused_silence(source_quiet_s: float, policy: LivenessPolicy) -> float:
    """How much of its nodes' silence a gateway's own silence explains: whatever it stayed quiet
    beyond its keepalive, and at most one interval (a gateway that is gone is not an excuse for
    long; its nodes reconnect elsewhere or are really silent)."""
    return min(max(0.0, source_quiet_s - policy.source_keepalive_s), policy.interval_s)


def deaf(quiet_s: float, policy: LivenessPolicy) -> bool:
    """Whether a registry that has heard no gateway at all for ``quiet_s`` is deaf: every live gateway
    publishes at least every ``source_keepalive_s`` (empty when no node spoke), so twice that without a
    batch from anyone means the registry (or NATS, between them) could hear nobody. What nodes said
    meanwhile was lost on the way, and their silence is not theirs: nobody is suspected for it."""
    return quiet_s > 2 * policy.source_keepalive_s


def on_tick(
    node: NodeLiveness, *, now: float, grace_until: float, policy: LivenessPolicy, excused_s: float = 0.0
) -> Transition | None:
    """Suspect or down a silent node; bring back a suppressed one that has been steady.

    ``excused_s`` is the part of the silence its gateway's stall explains (:func:`excused_silence`).
    """
    heard_lately = node.last_seen is not None and now - node.last_seen <= policy.suspect_after_s
    if node.suppressed and heard_lately:
        if node.decayed_penalty(now, policy.flap_half_life_s) >= policy.flap_reuse_at:
            return None
        node.suppressed = False
        return node._move(node.alive_status(), "steady again after flapping")
    if now < grace_until or node.announced == DOWN:
        return None
    silent_s = now - node.last_seen - excused_s if node.last_seen is not None else math.inf
    if silent_s > policy.down_after_s:
        node._add_penalty(1.0, now, policy)
        return node._move(DOWN, f"no heartbeat for {policy.down_after_s:g}s", counts_against=True)
    if silent_s > policy.suspect_after_s and node.announced in ALIVE:
        node._add_penalty(1.0, now, policy)
        return node._move(SUSPECT, "missed a heartbeat")
    return None


def on_departure(node: NodeLiveness) -> Transition | None:
    """The agent said goodbye (clean shutdown): down at once, no penalty."""
    node.last_seen = None
    return node._move(DOWN, "agent shut down")


def on_drain(node: NodeLiveness) -> Transition | None:
    node.draining = True
    return node._move(DRAINING, "drain requested") if node.announced == READY else None


def drain_change(node_id: str, status: str, *, draining: bool) -> Transition | None:
    """What its owner's drain (``draining``) or its end announces at once of a node in ``status``: only an alive
    node moves now; a suspect or down one comes back as the flag says with its next heartbeat."""
    if draining and status == READY:
        return Transition(node_id, READY, DRAINING, "drain requested")
    if not draining and status == DRAINING:
        return Transition(node_id, DRAINING, READY, "drain ended")
    return None


# -- reputation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reputation:
    """Evidence for and against a node, decaying with age; the score is its Laplace estimate."""

    successes: float = 0.0
    failures: float = 0.0
    at: float = 0.0  # epoch seconds of the last update

    @property
    def score(self) -> float:
        return (self.successes + 1.0) / (self.successes + self.failures + 2.0)

    def decayed(self, now: float, half_life_s: float) -> Reputation:
        factor = math.pow(0.5, max(0.0, now - self.at) / half_life_s)
        return Reputation(self.successes * factor, self.failures * factor, now)

    def record(self, *, success: bool, weight: float, now: float, half_life_s: float) -> Reputation:
        base = self.decayed(now, half_life_s)
        if success:
            return Reputation(base.successes + weight, base.failures, now)
        return Reputation(base.successes, base.failures + weight, now)


REPUTATION_HALF_LIFE_S = 7 * 86_400.0
#: what moves reputation, and by how much evidence
JOB_COMPLETED_WEIGHT = 1.0
JOB_FAILED_BY_NODE_WEIGHT = 1.0
WENT_DOWN_WEIGHT = 0.5
#: smaller moves are kept but not announced
REPUTATION_ANNOUNCE_STEP = 0.02


def worth_announcing(previous: float, current: float) -> bool:
    return abs(current - previous) >= REPUTATION_ANNOUNCE_STEP


def may_see(
    *, node_id: str, owner_id: str, kind: str, user_id: str | None, by_node_id: str | None, roles: list[str]
) -> bool:
    """Owners see their nodes (directly or with a key), admins all, a node itself; nobody else."""
    if kind == "node":
        return by_node_id == node_id
    return "admin" in roles or user_id == owner_id


# -- labels ----------------------------------------------------------------------------------


class TooManyLabels(ValueError):
    """A patch would leave a node more labels than it may have."""


def patched_labels(current: dict[str, str], patch: dict[str, str | None], *, most: int) -> dict[str, str]:
    """``current`` with a JSON merge patch applied: a value sets its label, ``None`` removes it. Raises
    ``TooManyLabels`` past ``most``."""
    labels = {key: value for key, value in current.items() if key not in patch}
    labels |= {key: value for key, value in patch.items() if value is not None}
    if len(labels) > most:
        raise TooManyLabels(f"a node has at most {most} labels; this would leave it {len(labels)}")
    return dict(sorted(labels.items()))


@dataclass(slots=True)
class Given:
    """What a node gave in a batch of job outcomes (``contributions``)."""

    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    run_s: float = 0.0
    cpu_s: float = 0.0


def contributions(events: Iterable[Event]) -> dict[str, Given]:
    """Per node: the attempts that ended there. A completed job's last attempt succeeded; a failed attempt is the
    job's own failure (its exit code, its timeout) unless ``node_fault`` blames the node (lost: counted when the
    job ends with it). Time and CPU are added where the agent measured them."""
    given: dict[str, Given] = {}
    for event in events:
        if isinstance(event, JobCompleted):
            counts = given.setdefault(event.node_id, Given())
            counts.succeeded += 1
        elif isinstance(event, JobFailed) and event.node_id:
            counts = given.setdefault(event.node_id, Given())
            if event.node_fault:
                counts.lost += 1
            else:
                counts.failed += 1
        else:
            continue
        counts.run_s += event.duration_s or 0.0
        counts.cpu_s += event.cpu_s or 0.0
    return given
