"""BitChat delivery benchmark: messages sent through the gateway, delivered on live WebSockets.

Starts the dev stack the way ``fogctl dev up`` does (``fogctl.devstack.DevStack``: NATS,
PostgreSQL with ``fsync=on`` and every service as its own process, durable defaults; not its
two local agents), with one change: the gateway's rate limits are raised far above what this
client sends (the limiters still run on every request, they never refuse; any 429 is counted).

Then, from this process:

1. **users**: ``--clients`` accounts, registered and logged in (argon2id at its default cost).
2. **conversations**: ``--groups`` groups of ``--group-size`` members (the first member creates
   it with the others), and the remaining users in pairs, each pair's direct conversation made by
   a first message (an odd user out pairs with user 0). Messaging learns of users from auth's
   events, so a 404 for a user registered a moment ago is tried again.
3. **live**: one WebSocket per user on ``/v1/sync/live`` (bearer in the handshake), read by a
   task of its own that parses every frame and matches every ``message`` entry to its send.
4. **phases**: a warm-up of ``--warmup`` seconds at the lowest rate (not reported), then each
   rate of ``--rates`` in turn for ``--seconds``. Every member of every conversation is a sender
   slot, visited in a fixed shuffled order; one pacing task wakes every 5 ms and starts every send
   that has come due at the offered rate (open loop: sends do not wait for each other), with at
   most ``--max-in-flight`` HTTP requests outstanding. A send due while that many are in flight
   waits for a slot (its lag behind schedule is reported); sends not started by the end of the
   window are counted as not sent. Each send is ``POST /v1/conversations/{id}/messages`` with a
   fresh ``client_msg_id``, through one shared ``httpx.AsyncClient``; a send whose connection
   fails is sent once more with the same ``client_msg_id`` (the API stores it once).
5. **drain**: after the window, until every accepted message has reached every other member of
   its conversation or ``--drain`` seconds have passed.

Each message's send time (just before its POST) is kept by ``client_msg_id`` in this process, so
a delivery is matched to it even when its frame arrives before the POST's answer. Figures per rate:

* **sent/s**: messages the API accepted (201, or 200 for a retry whose first attempt was
  stored) over the window;
* **deliveries/s**: (message, recipient) pairs received, a recipient being a member other than
  the sender (the sender's own copy on its stream is counted apart, as "echoes"), over the time
  from the window's start to the last delivery; **msgs/s**: messages that reached every
  recipient, over the same time;
* **lost**: accepted messages that did not reach every recipient by the end of the drain, and
  the deliveries missing; **dup**: a recipient receiving the same message more than once;
* **latency**: per delivery, from just before the POST to the arrival of the live frame that
  carried it (after the frame is read, before it is parsed); p50, p99 and max; and, for
  comparison, each accepted POST's own time to its answer;
* **CPU**: user + system time of each process, read at the window's start and when the drain
  ends, in cores (Postgres with its backends); "other" is what the rest of the machine used;
* **messaging's handlers**: from the service's own FastStream counters (``/metrics``), read at
  the same moments, the ``send``, ``sync`` and ``sync_many`` requests it finished and the time
  spent in them. Sends are handled many at once (their group commit batches them), so their
  time over the phase's passes 100 %; a send's mean time is its wait for its batch's commit.

The target (≥ 5,000 messages/s delivered with p99 ≤ 50 ms) is judged per rate on deliveries/s
(for a direct conversation a delivery is a message), with nothing lost or duplicated.
Usage: ``python bench/messaging.py [--clients 50] [--groups 2] [--group-size 8]
[--rates 50,100,250,500,1000,2000,5000] [--seconds 10] [--warmup 5] [--drain 15] [--max-in-flight 64]
[--text-bytes 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import re
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fog_shared.commands import messaging as contract
from fog_shared.devservers import free_port
from fogctl.devstack import DevStack

PASSWORD = "correct horse battery staple"  # noqa: S105 - the benchmark's own throwaway accounts
#: far above what this client sends (see bench/gateway_auth.py)
GATEWAY_LIMITS = {
    "FOG_GATEWAY_RATE_PER_SOURCE_PER_S": "1000000",
    "FOG_GATEWAY_BURST_PER_SOURCE": "1000000",
    "FOG_GATEWAY_RATE_PER_PRINCIPAL_PER_S": "1000000",
    "FOG_GATEWAY_BURST_PER_PRINCIPAL": "1000000",
}
#: processes whose CPU time is reported, as named in the dev stack's state ("client" is us)
MEASURED = ("client", "gateway", "messaging", "nats", "postgres", "auth")
#: the pacing task wakes this often and starts every send that has come due
SEND_TICK_S = 0.005
#: the first direct message of each pair (it makes the conversation) is not measured
SETUP_PREFIX = "setup-"
#: access tokens live 10 minutes: refresh them before a phase once they are this old
REFRESH_AFTER_S = 300.0
#: the target of the issue: deliveries per second, and p99 in ms
TARGET_PER_S, TARGET_P99_MS = 5000, 50.0


class BenchStack(DevStack):
    """The dev stack with the gateway's rate limits raised. ``service_env`` drops every ``FOG_*``
    variable of the caller's environment, so they are added where the gateway is started."""

    def spawn(self, svc: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return super().spawn(svc, env | GATEWAY_LIMITS if svc == "gateway" else env)


# -- CPU -------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used so far by each measured process (Postgres with its backends) and by the
    whole machine (what it used beyond our processes is other load: this machine is shared)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    def sample(self) -> dict[str, float]:
        used = {name: _cpu_seconds(process, name == "postgres") for name, process in self.processes.items()}
        machine = psutil.cpu_times()
        used["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return used


def _cpu_seconds(process: psutil.Process, with_children: bool) -> float:
    """With children: those still running, and those that ended and were waited for (Postgres's
    backends and autovacuum workers come and go)."""
    times = process.cpu_times()
    total: float = times.user + times.system
    if not with_children:
        return total
    total += times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:  # ended between listing and reading: counted once it is waited for
            continue
        total += times.user + times.system
    return total


# -- the messaging service's own view --------------------------------------------------------

#: FastStream's Prometheus counters per subscriber (the subject is one of the labels)
_METRIC = re.compile(r"^(fog_received_processed_messages_(?:total|duration_seconds_sum))\{([^}]*)\} ([0-9.e+-]+)$")
#: the messaging handlers whose work is reported: a send, a long-poll's sync, and the sync_many
#: a gateway asks for the live streams it wakes together
HANDLERS = {"send": contract.SEND, "sync": contract.SYNC, "sync_many": contract.SYNC_MANY}


async def handler_counters(http: httpx.AsyncClient, messaging_url: str) -> dict[str, float]:
    """Requests each reported handler has finished, and the seconds spent in them, so far."""
    counters: dict[str, float] = {}
    for line in (await http.get(f"{messaging_url}/metrics")).text.splitlines():
        match = _METRIC.match(line)
        if match is None:
            continue
        for name, subject in HANDLERS.items():
            if f'"{subject}"' in match[2]:
                key = f"{name} {'seconds' if match[1].endswith('_sum') else 'handled'}"
                counters[key] = counters.get(key, 0.0) + float(match[3])
    return counters


# -- users and conversations -----------------------------------------------------------------


@dataclass
class User:
    index: int
    email: str
    user_id: str = ""
    access_token: str = ""
    refresh_token: str = ""
    tokens_at: float = 0.0

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Conversation:
    id: str
    kind: str
    #: user indexes
    members: list[int]


async def _answer(http: httpx.AsyncClient, method: str, path: str, user: User | None, body: Any) -> httpx.Response:
    """One call; a 404 is tried again for up to 30 s (messaging may not know a new user yet)."""
    deadline = time.monotonic() + 30.0
    while True:
        headers = user.bearer if user is not None else None
        response = await http.request(method, path, json=body, headers=headers)
        if response.status_code != 404 or time.monotonic() > deadline:
            if response.is_error:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
            return response
        await asyncio.sleep(0.2)  # a pause before asking again, not a synchronisation


async def sign_up(http: httpx.AsyncClient, count: int) -> list[User]:
    """``count`` accounts, each registered and logged in; four at a time (argon2id is slow)."""
    run = uuid.uuid4().hex[:8]
    users = [User(i, f"bench-{run}-{i}@example.org") for i in range(count)]
    gate = asyncio.Semaphore(4)

    async def one(user: User) -> None:
        async with gate:
            body = {"email": user.email, "password": PASSWORD}
            user.user_id = (await _answer(http, "POST", "/v1/auth/register", None, body)).json()["user_id"]
            tokens = (await _answer(http, "POST", "/v1/auth/login", None, body)).json()
            user.access_token, user.refresh_token = tokens["access_token"], tokens["refresh_token"]
            user.tokens_at = time.monotonic()

    await asyncio.gather(*(one(user) for user in users))
    return users


async def refresh_tokens(http: httpx.AsyncClient, users: list[User]) -> None:
    """New access tokens for the users whose tokens are getting old (a refresh hashes nothing)."""
    for user in users:
        if time.monotonic() - user.tokens_at < REFRESH_AFTER_S:
            continue
        body = {"refresh_token": user.refresh_token}
        tokens = (await _answer(http, "POST", "/v1/auth/refresh", None, body)).json()
        user.access_token, user.refresh_token = tokens["access_token"], tokens["refresh_token"]
        user.tokens_at = time.monotonic()


async def make_conversations(
    http: httpx.AsyncClient, users: list[User], groups: int, group_size: int
) -> list[Conversation]:
    """``groups`` groups of ``group_size``, then the rest of the users in direct pairs."""
    if groups * group_size > len(users):
        raise SystemExit(f"{groups} groups of {group_size} need at least {groups * group_size} clients")
    conversations = []
    for g in range(groups):
        members = list(range(g * group_size, (g + 1) * group_size))
        owner, others = users[members[0]], [users[i].user_id for i in members[1:]]
        body = {"name": f"bench group {g}", "member_ids": others}
        made = (await _answer(http, "POST", "/v1/groups", owner, body)).json()
        conversations.append(Conversation(made["id"], "group", members))
    rest = list(range(groups * group_size, len(users)))
    if len(rest) % 2:
        rest.insert(-1, 0)  # the odd user out talks with user 0
    for a, b in zip(rest[::2], rest[1::2], strict=True):
        body = {"text": "hello", "client_msg_id": f"{SETUP_PREFIX}{a}-{b}"}
        path = f"/v1/conversations/direct/{users[b].user_id}/messages"
        made = (await _answer(http, "POST", path, users[a], body)).json()
        conversations.append(Conversation(made["conversation_id"], "direct", [a, b]))
    return conversations


# -- sends and deliveries --------------------------------------------------------------------


@dataclass
class Phase:
    """One rate's window: what was sent, what arrived, and when."""

    name: str
    rate: float
    seconds: float
    started: float = 0.0
    #: sends due in the window that were never started (every in-flight slot stayed busy)
    not_sent: int = 0
    #: the largest delay of a send's start behind its schedule
    max_lag_s: float = 0.0
    #: POST answers by status ("error:<exception>" for a failed request)
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    #: (accepted message, recipient) pairs expected, and those received
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    echoes: int = 0
    #: messages delivered to every recipient
    complete: int = 0
    last_delivery: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    #: per accepted send, from just before the POST to its answer
    answers_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: messaging's handlers over the same time: requests handled and seconds spent (``handler_counters``)
    handlers: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    lost_messages: int = 0
    #: sends still waiting for their answer, and the moment everything expected has arrived
    in_flight: int = 0
    sending: bool = True
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    #: the drain has ended: what arrives later is counted as late, the phase's figures stay
    closed: bool = False

    def check_settled(self) -> None:
        if not self.sending and not self.in_flight and self.delivered >= self.expected:
            self.settled.set()


@dataclass
class Sent:
    phase: Phase
    sender: int
    recipients: int
    at: float
    accepted: bool = False
    #: user indexes that received it
    received_by: set[int] = field(default_factory=set)


class Ledger:
    """Every measured message by ``client_msg_id``, matched to the live frames that carry it."""

    def __init__(self) -> None:
        self.sent: dict[str, Sent] = {}
        #: message entries whose client_msg_id this benchmark did not send in a phase
        self.unmatched = 0
        #: frames that said changes were left out (``limited``)
        self.limited_frames = 0
        #: deliveries, and POST answers, that arrived after their phase's drain had ended
        self.late = 0
        self.late_answers = 0

    def sending(self, client_msg_id: str, sent: Sent) -> None:
        self.sent[client_msg_id] = sent

    def accepted(self, sent: Sent) -> None:
        phase = sent.phase
        if phase.closed:  # the phase's figures are final: a send that slow is only counted apart
            self.late_answers += 1
            return
        sent.accepted = True
        phase.accepted += 1
        phase.expected += sent.recipients
        phase.delivered += len(sent.received_by)
        if len(sent.received_by) == sent.recipients:
            phase.complete += 1

    def frame(self, user: int, frame: dict[str, Any], at: float) -> None:
        self.limited_frames += bool(frame.get("limited"))
        for entry in frame.get("entries", ()):
            if entry.get("kind") != "message" or entry.get("message") is None:
                continue
            sent = self.sent.get(entry["message"]["client_msg_id"])
            if sent is None:
                self.unmatched += not entry["message"]["client_msg_id"].startswith(SETUP_PREFIX)
                continue
            self._delivery(sent, user, at)

    def _delivery(self, sent: Sent, user: int, at: float) -> None:
        phase = sent.phase
        if user == sent.sender:
            phase.echoes += 1
            return
        if phase.closed:
            self.late += 1
            return
        if user in sent.received_by:
            phase.duplicates += 1
            return
        sent.received_by.add(user)
        phase.latencies_ms.append((at - sent.at) * 1000)
        phase.last_delivery = max(phase.last_delivery, at)
        if sent.accepted:
            phase.delivered += 1
            phase.complete += len(sent.received_by) == sent.recipients
            phase.check_settled()


async def listen(ws_url: str, user: User, ledger: Ledger, closed: Counter[str]) -> None:
    """The user's live stream until it ends: every frame goes to the ledger."""
    try:
        async with connect(ws_url, additional_headers=user.bearer, max_size=None, open_timeout=30) as ws:
            async for raw in ws:
                at = time.perf_counter()
                ledger.frame(user.index, json.loads(raw), at)
    except ConnectionClosed as exc:
        closed[str(exc.rcvd.code if exc.rcvd else None)] += 1
    except Exception as exc:  # counted, and the run goes on: its messages will show as lost
        closed[type(exc).__name__] += 1


@dataclass
class Load:
    http: httpx.AsyncClient
    messaging_url: str
    users: list[User]
    ledger: Ledger
    #: (sender, conversation) in the order the pacing task visits them
    slots: list[tuple[int, Conversation]]
    max_in_flight: int
    text: str
    sends: set[asyncio.Task[None]] = field(default_factory=set)

    async def run_phase(self, phase: Phase, cpu: CpuMeter, drain_s: float) -> None:
        """Offer ``phase.rate`` for ``phase.seconds``, then drain; CPU is read around both."""
        await refresh_tokens(self.http, self.users)
        handlers_before, cpu_before = await handler_counters(self.http, self.messaging_url), cpu.sample()
        await self._offer(phase)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(phase.settled.wait(), drain_s)
        phase.elapsed_s, phase.closed = time.perf_counter() - phase.started, True
        cpu_after, handlers_after = cpu.sample(), await handler_counters(self.http, self.messaging_url)
        phase.cpu_s = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
        phase.handlers = {k: v - handlers_before.get(k, 0.0) for k, v in handlers_after.items()}
        # Sends still unanswered would land in the next phase: let them end first (30 s timeout).
        await asyncio.gather(*self.sends, return_exceptions=True)
        phase.lost_messages = sum(
            1
            for s in self.ledger.sent.values()
            if s.phase is phase and s.accepted and len(s.received_by) < s.recipients
        )

    async def _offer(self, phase: Phase) -> None:
        gate = asyncio.Semaphore(self.max_in_flight)
        spacing = 1.0 / phase.rate
        phase.started = time.perf_counter()
        end = phase.started + phase.seconds
        due_total = int(phase.rate * phase.seconds)
        k = 0  # sends started so far; send k is due at started + k × spacing
        while k < due_total:
            now = time.perf_counter()
            if now >= end:
                break
            while k < due_total and phase.started + k * spacing <= now:
                await gate.acquire()  # with every slot busy, this send starts late
                now = time.perf_counter()
                if now >= end:
                    gate.release()
                    break
                phase.max_lag_s = max(phase.max_lag_s, now - (phase.started + k * spacing))
                sender, conversation = self.slots[k % len(self.slots)]
                phase.in_flight += 1
                task = asyncio.create_task(self._send(phase, sender, conversation, gate))
                self.sends.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self.sends.discard)
                k += 1
            await asyncio.sleep(SEND_TICK_S)  # pacing: the next sends are not due yet
        phase.not_sent = due_total - k
        phase.sending = False
        phase.check_settled()

    async def _send(self, phase: Phase, sender: int, conversation: Conversation, gate: asyncio.Semaphore) -> None:
        client_msg_id = uuid.uuid4().hex
        sent = Sent(phase, sender, len(conversation.members) - 1, time.perf_counter())
        self.ledger.sending(client_msg_id, sent)
        body = {"text": self.text, "client_msg_id": client_msg_id}
        path, headers = f"/v1/conversations/{conversation.id}/messages", self.users[sender].bearer
        try:
            try:
                response = await self.http.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:
                # A kept-alive connection the gateway closed as it was reused (uvicorn closes idle
                # ones after 5 s): sent again with the same client_msg_id, as clients do, which
                # stores nothing twice (200 says the first attempt was stored).
                phase.statuses[f"retried after {type(exc).__name__}"] += 1
                response = await self.http.post(path, json=body, headers=headers)
            phase.statuses[str(response.status_code)] += 1
            if response.status_code in (200, 201):
                phase.answers_ms.append((time.perf_counter() - sent.at) * 1000)
                self.ledger.accepted(sent)
        except httpx.HTTPError as exc:
            phase.statuses[f"error:{type(exc).__name__}"] += 1
        finally:
            gate.release()
            phase.in_flight -= 1
            phase.check_settled()


def sender_slots(conversations: list[Conversation]) -> list[tuple[int, Conversation]]:
    """Every member of every conversation, in a fixed shuffled order so that consecutive sends
    go to different conversations."""
    slots = [(member, c) for c in conversations for member in c.members]
    random.Random(1).shuffle(slots)
    return slots


# -- running and reporting -------------------------------------------------------------------


@dataclass
class Run:
    clients: int
    conversations: list[Conversation] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    closed: Counter[str] = field(default_factory=Counter)
    setup_s: float = 0.0


async def run(urls: dict[str, str], args: argparse.Namespace, rates: list[float], cpu: CpuMeter, result: Run) -> None:
    limits = httpx.Limits(max_connections=args.max_in_flight + 4, max_keepalive_connections=None)
    gateway_url = urls["gateway"]
    async with httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=30.0) as http:
        started = time.monotonic()
        users = await sign_up(http, args.clients)
        result.conversations = await make_conversations(http, users, args.groups, args.group_size)
        ws_url = gateway_url.replace("http://", "ws://", 1) + "/v1/sync/live"
        listeners = [asyncio.create_task(listen(ws_url, user, result.ledger, result.closed)) for user in users]
        result.setup_s = time.monotonic() - started
        print(
            f"{len(users)} users, {len(result.conversations)} conversations "
            f"({args.groups} groups of {args.group_size}) ready in {result.setup_s:.1f} s",
            flush=True,
        )
        # This process's long-lived objects out of the cyclic GC's full collections, which would
        # otherwise pause every stream at once (see bench/node_heartbeats.py).
        gc.collect()
        gc.freeze()
        slots = sender_slots(result.conversations)
        load = Load(http, urls["messaging"], users, result.ledger, slots, args.max_in_flight, "x" * args.text_bytes)
        try:
            phases = [Phase("warm-up", min(rates), args.warmup)] if args.warmup > 0 else []
            phases += [Phase(f"{rate:g}/s", rate, args.seconds) for rate in rates]
            for phase in phases:
                await load.run_phase(phase, cpu, args.drain)
                if phase.name != "warm-up":
                    result.phases.append(phase)
                    print(row(phase), flush=True)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)


def percentile(ordered: list[float], fraction: float) -> float | None:
    return ordered[max(0, int(len(ordered) * fraction + 0.5) - 1)] if ordered else None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


HEADER = (
    f"{'offered':>9} {'sent/s':>7} {'deliv/s':>8} {'msgs/s':>7} {'lost':>9} {'dup':>4} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'POST p50/p99':>12} {'lag ms':>7} {'unsent':>6}  answers"
)


def row(p: Phase) -> str:
    lat, answered = sorted(p.latencies_ms), sorted(p.answers_ms)
    post = f"{_ms(percentile(answered, 0.5))}/{_ms(percentile(answered, 0.99))}"
    span = max(p.seconds, (p.last_delivery - p.started) if p.last_delivery else 0.0)
    answers = ", ".join(f"{status}: {n}" for status, n in sorted(p.statuses.items()))
    lost = f"{p.lost_messages}/{p.expected - p.delivered}"
    return (
        f"{p.name:>9} {p.accepted / p.seconds:7.0f} {p.delivered / span:8.0f} {p.complete / span:7.0f} "
        f"{lost:>9} {p.duplicates:4} {_ms(percentile(lat, 0.5)):>7} {_ms(percentile(lat, 0.99)):>7} "
        f"{_ms(lat[-1] if lat else None):>7} {post:>12} {1000 * p.max_lag_s:7.0f} {p.not_sent:6}  {answers}"
    )


def report(result: Run, args: argparse.Namespace) -> None:
    directs = sum(c.kind == "direct" for c in result.conversations)
    print(
        f"\n{args.clients} clients, each with a live WebSocket; {directs} direct conversations and "
        f"{args.groups} groups of {args.group_size}; every member a sender; {args.seconds:g} s per rate, "
        f"at most {args.max_in_flight} sends in flight, drain up to {args.drain:g} s"
    )
    print(
        "lost: messages not delivered to every recipient / deliveries missing; POST: its answer, ms; "
        "lag: the latest send's start behind schedule; unsent: due but never started"
    )
    print(HEADER)
    for phase in result.phases:
        print(row(phase))
    print("\nCPU from the window's start to the drain's end, in cores (the machine has 2), and CPU ms per message:")
    print(f"{'offered':>9} " + " ".join(f"{name:>9}" for name in (*MEASURED, "other")) + "   gateway messaging")
    for p in result.phases:
        ours = sum(p.cpu_s.get(name, 0.0) for name in MEASURED)
        shares = [p.cpu_s.get(name, 0.0) for name in MEASURED] + [p.cpu_s.get("machine", 0.0) - ours]
        per_message = " ".join(
            f"{1000 * p.cpu_s.get(name, 0.0) / max(1, p.accepted):9.2f}" for name in ("gateway", "messaging")
        )
        print(f"{p.name:>9} " + " ".join(f"{used / p.elapsed_s:9.2f}" for used in shares) + f" {per_message}")
    print("\nmessaging's handlers: requests, mean ms, their time over the phase's (over 100 %: several at once)")
    for p in result.phases:
        cells = []
        for name in HANDLERS:
            handled, seconds = p.handlers.get(f"{name} handled", 0.0), p.handlers.get(f"{name} seconds", 0.0)
            mean = 1000 * seconds / handled if handled else 0.0
            cells.append(f"{name} {handled:7.0f} {mean:6.2f} ms {100 * seconds / p.elapsed_s:4.0f} %")
        print(f"{p.name:>9}   " + "   ".join(cells))
    echoes = sum(p.echoes for p in result.phases)
    ledger = result.ledger
    print(
        f"\nsenders' own copies on their streams: {echoes}; after their drain: {ledger.late} deliveries, "
        f"{ledger.late_answers} POST answers"
    )
    print(
        f"message entries not sent by this run: {ledger.unmatched}; frames with changes left out "
        f"(limited): {ledger.limited_frames}; streams that ended: {dict(result.closed) or 0}"
    )
    print(verdict(result.phases))


def verdict(phases: list[Phase]) -> str:
    """Met at the highest rate whose deliveries/s, p99, losses and duplicates all pass."""
    met = []
    for p in phases:
        span = max(p.seconds, p.last_delivery - p.started)
        p99 = percentile(sorted(p.latencies_ms), 0.99)
        if (
            p.delivered / span >= TARGET_PER_S
            and p99 is not None
            and p99 <= TARGET_P99_MS
            and p.expected == p.delivered
            and not p.duplicates
        ):
            met.append(p.name)
    target = f"target (≥ {TARGET_PER_S:,} deliveries/s, p99 ≤ {TARGET_P99_MS:g} ms, nothing lost or doubled)"
    return f"{target}: met at {', '.join(met)}" if met else f"{target}: not met at any rate measured"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50, help="users, each with one live WebSocket")
    parser.add_argument("--groups", type=int, default=2, help="groups; the other users talk in direct pairs")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--rates", default="50,100,250,500,1000,2000,5000", help="offered messages/s, one window each")
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window per rate")
    parser.add_argument("--warmup", type=float, default=5.0, help="at the lowest rate, not reported")
    parser.add_argument("--drain", type=float, default=15.0, help="the longest wait for deliveries after a window")
    parser.add_argument("--max-in-flight", type=int, default=64, help="HTTP sends outstanding at most")
    parser.add_argument("--text-bytes", type=int, default=64, help="each message's text")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    result = Run(args.clients)
    with tempfile.TemporaryDirectory(prefix="fog-bench-") as tmp:
        stack = BenchStack(Path(tmp), gateway_port=free_port())
        try:
            state = stack.up()
            stack.wait_ready(120)
            pids = {p.name: p.pid for p in state.processes} | {"client": os.getpid()}
            cpu = CpuMeter({name: pids[name] for name in MEASURED})
            urls = {p.name: p.url for p in state.processes} | {"gateway": state.gateway_url}
            asyncio.run(run(urls, args, rates, cpu, result))
        except BaseException:
            for log in sorted(stack.logs.glob("*.log")):  # the data dir goes with the stack: show why first
                print(f"--- {log.name}, last lines:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
            raise
        finally:
            stack.down()
    report(result, args)


if __name__ == "__main__":
    main()
