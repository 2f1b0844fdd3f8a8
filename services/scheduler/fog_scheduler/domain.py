"""Pure rules of the scheduler: placement (filter, then score), retries. No I/O, no clock.

Placement works on a snapshot: the nodes as the registry announced them, minus what this
scheduler has already allocated on them. For each job, nodes are *filtered* (ready, fits,
constraints) and the survivors *scored* (bin-pack or spread, affinities, reputation; a node the
job already failed or was lost on is penalised, so a retry prefers another). On a large cluster
not every node is scored: like Nomad, the scheduler stops once it has ``enough_candidates``
feasible nodes, starting from a position that rotates between jobs, so that decisions stay cheap
and spread over the cluster. A job that fits nowhere has examined every node, so its
explanation counts them all.

The import-linter contract in pyproject.toml keeps asyncpg, nats, faststream and HTTP out of here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fog_shared.commands.scheduler import ENDED

Strategy = Literal["binpack", "spread"]


@dataclass(slots=True)
class NodeCapacity:
    """One node in the snapshot; ``used_*`` grow as this scheduler places work on it."""

    node_id: str
    status: str
    cpu_cores: float
    memory_bytes: int
    gpus: int
    arch: str
    region: str | None
    labels: dict[str, str]
    reputation: float = 0.5
    #: the networks it gives its jobs (``host``, ``none``)
    networks: frozenset[str] = frozenset({"host"})
    #: the disk its jobs may fill, as it declared at join (``Capabilities.disk_bytes``)
    disk_bytes: int = 0
    used_cpu: float = 0.0
    used_memory: int = 0
    used_gpus: int = 0
    used_disk: int = 0

    def free(self) -> tuple[float, int, int, int]:
        return (self.cpu_cores - self.used_cpu, self.memory_bytes - self.used_memory, self.gpus - self.used_gpus,
                self.disk_bytes - self.used_disk)  # fmt: skip

    def take(self, request: Request) -> None:
        self.used_cpu += request.cpu_cores
        self.used_memory += request.memory_bytes
        self.used_gpus += request.gpus
        self.used_disk += request.disk_bytes

    def facts(self) -> tuple[object, ...]:
        """What decides whether a job could ever run here (not what it uses now, nor its reputation)."""
        return (self.node_id, self.status, self.cpu_cores, self.memory_bytes, self.gpus, self.arch, self.region,
                self.labels, self.networks, self.disk_bytes)  # fmt: skip

    def give_back(self, request: Request) -> None:
        self.used_cpu = max(0.0, self.used_cpu - request.cpu_cores)
        self.used_memory = max(0, self.used_memory - request.memory_bytes)
        self.used_gpus = max(0, self.used_gpus - request.gpus)
        self.used_disk = max(0, self.used_disk - request.disk_bytes)


@dataclass(frozen=True, slots=True)
class Request:
    """What placement needs to know about a job."""

    cpu_cores: float
    memory_bytes: int
    gpus: int
    labels: dict[str, str] = field(default_factory=dict)
    region: str | None = None
    arch: str | None = None
    affinities: tuple[tuple[str, str, int], ...] = ()
    avoid: frozenset[str] = frozenset()
    network: str = "host"
    #: the disk it may fill beneath its directory (0: it stated none, and holds none)
    disk_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str | None
    #: why nodes were left out, and how many for each reason
    filtered: dict[str, int]
    #: the top candidates, best first: node id, total score, and its parts
    candidates: list[dict[str, Any]]
    #: True when some node would fit the job once running work frees capacity
    waits_for_capacity: bool = False

    def summary(self, examined: int) -> str:
        if self.node_id is not None:
            return f"placed on {self.node_id} among {len(self.candidates)} candidates"
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.filtered.items()))
        return f"no node fits: {examined} examined ({reasons or 'no nodes'})"


@dataclass(frozen=True, slots=True)
class PlacementPolicy:
    strategy: Strategy = "binpack"
    enough_candidates: int = 8
    reputation_weight: float = 20.0
    avoid_penalty: float = 50.0
    top: int = 3


@dataclass(frozen=True, slots=True)
class Room:
    """The most of each resource that any ready node has free: a job asking for more fits nowhere now."""

    cpu_cores: float
    memory_bytes: int
    gpus: int
    disk_bytes: int = 0

    @classmethod
    def of(cls, nodes: Sequence[NodeCapacity]) -> Room:
        free = [node.free() for node in nodes if node.status == "ready"]
        if not free:
            return cls(0.0, 0, 0, 0)
        return cls(max(f[0] for f in free), max(f[1] for f in free), max(f[2] for f in free), max(f[3] for f in free))

    def may_hold(self, cpu_cores: float, memory_bytes: int, gpus: int, disk_bytes: int = 0) -> bool:
        """False when no node has this much free (the same tolerance on cores as placing)."""
        return (cpu_cores <= self.cpu_cores + 1e-9 and memory_bytes <= self.memory_bytes and gpus <= self.gpus
                and disk_bytes <= self.disk_bytes)  # fmt: skip


class FreeRoom:
    """The ``Room`` of nodes that fill up as jobs are placed on them, recomputed only when it matters.

    Placing only ever takes room, so the last computed one is at least the true one: when it cannot
    hold a job, the true one cannot either. Only a "may" is checked against a fresh one.
    """

    def __init__(self, nodes: Sequence[NodeCapacity]) -> None:
        self._nodes = nodes
        self._room: Room | None = None  # computed when first asked: a batch of new jobs never asks
        self._fresh = False

    def taken(self) -> None:
        """A job was placed on one of the nodes."""
        self._fresh = False

    def may_hold(self, request: Request) -> bool:
        wanted = (request.cpu_cores, request.memory_bytes, request.gpus, request.disk_bytes)
        if (self._room is None or self._room.may_hold(*wanted)) and not self._fresh:
            self._room, self._fresh = Room.of(self._nodes), True
        assert self._room is not None
        return self._room.may_hold(*wanted)


#: why a node is left out for the network a job asks (``Request.network``)
_NO_NETWORK = {"host": "no host network for jobs", "none": "no isolated network for jobs"}


def _static_misfit(node: NodeCapacity, request: Request) -> str | None:
    """Why the node can never run the job (whatever else runs there), if it cannot."""
    if node.status != "ready":
        return f"node {node.status}"
    if request.arch is not None and node.arch != request.arch:
        return f"architecture is not {request.arch}"
    if request.region is not None and node.region != request.region:
        return f"region is not {request.region}"
    for key, value in request.labels.items():
        if node.labels.get(key) != value:
            return f"label {key}={value} missing"
    if request.network not in node.networks:
        return _NO_NETWORK.get(request.network, f"no {request.network} network for jobs")
    if node.cpu_cores < request.cpu_cores:
        return "too few CPU cores"
    if node.memory_bytes < request.memory_bytes:
        return "too little memory"
    if node.gpus < request.gpus:
        return "too few GPUs"
    if node.disk_bytes < request.disk_bytes:
        return "too little disk"
    return None


def _busy(node: NodeCapacity, request: Request) -> str | None:
    # ``node.free()`` spelled out: this runs for every node a decision examines, and a tuple each time shows.
    if node.cpu_cores - node.used_cpu + 1e-9 < request.cpu_cores:
        return "CPU in use"
    if node.memory_bytes - node.used_memory < request.memory_bytes:
        return "memory in use"
    if node.gpus - node.used_gpus < request.gpus:
        return "GPUs in use"
    if node.disk_bytes - node.used_disk < request.disk_bytes:
        return "disk in use"
    return None


def _score(node: NodeCapacity, request: Request, policy: PlacementPolicy) -> dict[str, float]:
    cpu_after = (node.used_cpu + request.cpu_cores) / node.cpu_cores
    memory_after = (node.used_memory + request.memory_bytes) / node.memory_bytes
    fullness = 50.0 * (cpu_after + memory_after)  # 0..100
    parts = {"fit": fullness if policy.strategy == "binpack" else 100.0 - fullness}
    affinity = sum(weight for key, value, weight in request.affinities if node.labels.get(key) == value)
    if affinity:
        parts["affinity"] = float(affinity)
    parts["reputation"] = policy.reputation_weight * (node.reputation - 0.5)
    if node.node_id in request.avoid:
        parts["tried before"] = -policy.avoid_penalty
    return parts


def place(
    request: Request, nodes: Sequence[NodeCapacity], policy: PlacementPolicy = PlacementPolicy(), start: int = 0
) -> Placement:
    """The best node for ``request`` (or none, and why), without changing ``nodes``."""
    filtered: dict[str, int] = {}
    feasible: list[tuple[float, NodeCapacity, dict[str, float]]] = []
    waits = False
    count = len(nodes)
    start = start % count if count else 0
    # From ``start`` round to just before it, by index: a modulo per node, and a Counter, cost ~25 % of a decision.
    for index in itertools.chain(range(start, count), range(start)):
        node = nodes[index]
        reason = _static_misfit(node, request)
        if reason is None:
            reason = _busy(node, request)
            waits = waits or reason is not None
        if reason is not None:
            filtered[reason] = filtered.get(reason, 0) + 1
            continue
        parts = _score(node, request, policy)
        feasible.append((sum(parts.values()), node, parts))
        if len(feasible) >= policy.enough_candidates:
            break
    if not feasible:
        return Placement(None, filtered, [], waits_for_capacity=waits)
    feasible.sort(key=lambda item: (-item[0], item[1].node_id))
    top = [
        {"node_id": node.node_id, "score": round(total, 2), "parts": {k: round(v, 2) for k, v in parts.items()}}
        for total, node, parts in feasible[: policy.top]
    ]
    return Placement(feasible[0][1].node_id, filtered, top)


def retry_delay_s(backoff_s: float, attempt: int) -> float:
    """Before attempt ``attempt + 1``: the backoff doubles with every attempt, capped at an hour."""
    return float(min(3600.0, backoff_s * 2 ** max(0, attempt - 1)))


def after_failure(attempt: int, max_attempts: int) -> Literal["retry", "give up"]:
    return "retry" if attempt < max_attempts else "give up"


#: the most of an agent's error a failure's reason carries (the whole error is kept with the job)
REASON_ERROR_CHARS = 300


def failure_reason(
    *, attempt: int, max_attempts: int, timed_out: bool, exit_code: int | None, error: str | None,
    retry_in_s: float | None,
) -> str:  # fmt: skip
    """What a failed attempt's event says, for whoever reads the job's history: which attempt, what
    happened to it (the agent's error, else the exit code), and what comes next."""
    what = error or (f"exit code {exit_code}" if exit_code is not None else "no exit code")
    if len(what) > REASON_ERROR_CHARS:
        what = what[: REASON_ERROR_CHARS - 1] + "…"
    verb = "timed out" if timed_out else "failed"
    if retry_in_s is not None:
        then = f"tried again in {retry_in_s:g} s"
    elif attempt >= max_attempts:
        then = "no attempts left"
    else:
        then = "not tried again"
    return f"attempt {attempt} of {max_attempts} {verb}: {what}; {then}"


#: jobs of one owner that may wait for a node at once, unless the settings say otherwise
WAITING_MAX = 200_000


#: what an array's jobs' specs may take in all: each job keeps its own copy (a spec may carry 1 MiB of argv or
#: 512 KiB of files, and an array 100,000 jobs)
ARRAY_SPECS_MAX_BYTES = 1 << 30


def array_specs_fit(spec_bytes: int, count: int) -> bool:
    return spec_bytes * count <= ARRAY_SPECS_MAX_BYTES


def may_queue(waiting: int, adding: int, waiting_max: int) -> bool:
    """Whether an owner with ``waiting`` jobs waiting may add ``adding`` more: at most ``waiting_max`` wait."""
    return waiting + adding <= waiting_max


def unseen_output(stored: int, offset: int, data: str) -> str:
    """Of ``data``, which starts at character ``offset`` of an attempt's output, the part past the ``stored``
    characters already kept: empty when it holds nothing new, and when it would leave a gap (it never
    does, as an agent sends from the first character not acked)."""
    if offset > stored:
        return ""
    return data[stored - offset :]


#: the most (job, job it waits for) pairs one submit may make: an array of 100,000 jobs after 10 jobs makes a million
DEPENDENCY_PAIRS_MAX = 1_000_000


def dependencies_fit(waited: int, dependants: int) -> bool:
    return waited * dependants <= DEPENDENCY_PAIRS_MAX


def stranded_reason(blocker: str, status: str) -> str:
    """Why a job is cancelled, never run: a job it was to run after ended without succeeding."""
    return f"never ran: job {blocker}, which it was to run after, ended {status}"


def dependency_met(needs: str, status: str) -> bool:
    """Whether a job in ``status`` is what a job waiting for it ``needs``: its ``success``, or its ``end``."""
    return status == "succeeded" if needs == "success" else status in ENDED


def waiting_summary(waiting: int, shown: Sequence[tuple[str, str, str]]) -> str:
    """What a job waits for: how many jobs, and the first of them (id, what it needs of it, its status)."""
    listed = ", ".join(f"{job_id} to {'succeed' if needs == 'success' else 'end'} ({status})" for job_id, needs, status
                       in shown)  # fmt: skip
    more = f", and {waiting - len(shown)} more" if waiting > len(shown) else ""
    jobs = "job" if waiting == 1 else f"{waiting} jobs"
    return f"waiting for {jobs} first: {listed}{more}"
