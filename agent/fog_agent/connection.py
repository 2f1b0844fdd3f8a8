"""The agent's line to the gateway: connect, heartbeat at the pace the welcome sets, reconnect when it drops.

``AgentConnection.run`` returns the process's exit status: ``EXIT_STOPPED`` after ``stop()`` (the
signal handlers call it), ``EXIT_REFUSED`` when the gateway refuses the node for good. Any other
failure (gateway unreachable, connection dropped, a close with another code) is retried after a
backoff with full jitter, never longer than the heartbeat interval once a welcome has set it (a node
silent for four intervals is declared down); each new connection starts from a fresh welcome and ``seq`` 1.

Cut off: the platform declares a node down after four heartbeat intervals without word of it, and runs
its jobs elsewhere. So an agent that has heard nothing from its gateway (no message, no answer to the
ping sent with each heartbeat) for ``FENCE_AFTER_INTERVALS`` intervals (``FENCE_FLOOR_S`` at least)
kills its running jobs and drops the queued ones (``JobRunner.fence``), whether the connection looks up
or not: a job never runs on a cut off node beside its next attempt elsewhere. Before that, after
``RECONNECT_AFTER_INTERVALS``, the agent gives the silent connection up and tries a new one.

Frozen: an agent that does not run (stopped by a signal or a debugger, starved) can neither heartbeat nor
fence, while its jobs, in sessions of their own, run on. Its job launcher, a process of its own, holds a lease
on them that the agent renews while its event loop runs; past ``LAUNCHER_LEASE_INTERVALS`` without word it
kills them (``launcher_process``), and the agent, running again, reports them failed and connects anew.

Job messages go to the ``JobRunner``; each new connection gets the reports the gateway has not acked
yet, right after the welcome. ``stop()`` drains: the connection (and reconnection) goes on while the
running jobs end and their reports are acked, and only then says goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from fog_agent import __version__, protocol
from fog_agent.jobs import JobRunner, Send
from fog_agent.protocol import ProtocolViolation, Welcome
from fog_agent.usage import UsageSource

log = logging.getLogger(__name__)
# websockets logs every handshake header at DEBUG, Authorization included: its logger never gets that verbose.
_websocket_log = logging.getLogger("fog_agent.websocket")
_websocket_log.setLevel(logging.INFO)

EXIT_STOPPED, EXIT_REFUSED = 0, 3
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
#: a connection that stayed up longer than this was healthy: the next failure backs off from the start again
STABLE_AFTER_S = 60.0
WELCOME_TIMEOUT_S = 10.0
#: how long a goodbye may take before the agent leaves anyway
GOODBYE_TIMEOUT_S = 5.0
#: how long running jobs may go on once the agent is told to stop, before they are killed
DRAIN_TIMEOUT_S = 60.0
#: how long the agent waits, once its jobs have ended, for the gateway to ack their reports
REPORTS_ACK_TIMEOUT_S = 5.0
#: heartbeat intervals without word from the gateway after which the agent stops its jobs: the registry
#: declares a node down after four (``LivenessPolicy.for_interval``), and the scheduler then runs them elsewhere
FENCE_AFTER_INTERVALS = 3.0
#: ... but never sooner than this: a pause of the agent's own event loop (a loaded machine) must not look
#: like a cut-off. Below a third of a second of interval (tests alone run so fast) the jobs may outlive the node.
FENCE_FLOOR_S = 1.0
#: heartbeat intervals after which the job launcher kills the jobs of an agent it has not heard from (stopped or
#: frozen, it can neither heartbeat nor fence): renewed at least every ``LAUNCHER_LEASE_RENEWAL_S``, the lease runs
#: out before the four intervals after the agent's last heartbeat that the registry waits (``FENCE_FLOOR_S`` at least)
LAUNCHER_LEASE_INTERVALS = 2.5
LAUNCHER_LEASE_RENEWAL_S = 0.25
#: heartbeat intervals without word from the gateway after which the connection is given up for a new one
#: (``FENCE_FLOOR_S`` at least)
RECONNECT_AFTER_INTERVALS = 2.0
#: how long a closing handshake may take: a connection given up for silence would never complete one
CLOSE_TIMEOUT_S = 1.0
#: what a connection can fail with that is worth another try
_TRANSIENT = (OSError, TimeoutError, WebSocketException, ProtocolViolation)

T = TypeVar("T")


class Socket(Protocol):
    """The part of a websockets ``ClientConnection`` the agent uses."""

    async def recv(self) -> str | bytes: ...

    async def ping(self) -> Awaitable[float]: ...

    async def send(self, message: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


#: opens a connection to a URL with these handshake headers (websockets' ``connect`` unless a test says otherwise)
Connect = Callable[[str, Mapping[str, str]], Awaitable[Socket]]


def open_websocket(url: str, headers: Mapping[str, str]) -> Awaitable[Socket]:
    return connect(
        url,
        additional_headers=dict(headers),
        user_agent_header=f"fog-agent/{__version__}",
        logger=_websocket_log,
        max_size=protocol.MAX_MESSAGE_BYTES,  # websockets' default (1 MiB) is below what an assignment may be
        close_timeout=CLOSE_TIMEOUT_S,
        ping_interval=None,  # the agent pings with each heartbeat (``_heartbeats``): websockets' keepalive adds nothing
    )


def backoff_s(
    attempt: int, rng: random.Random, *, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S
) -> float:
    """The wait before retry ``attempt`` (0 for the first): uniform in [0, min(cap, base·2^attempt)].

    Full jitter: agents cut off together (a gateway restart) come back spread out, not in waves.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    ceiling = min(cap_s, base_s * 2 ** min(attempt, 64))  # the exponent is bounded so that the float cannot overflow
    return rng.uniform(0.0, ceiling)


class Backoff:
    """Failures in a row make the wait grow; a connection that held for ``STABLE_AFTER_S`` starts it over."""

    def __init__(self, rng: random.Random, clock: Callable[[], float]) -> None:
        self._rng, self._clock = rng, clock
        self._attempt = 0
        self._up_since: float | None = None
        self._cap_s = BACKOFF_CAP_S

    def connected(self, heartbeat_interval_s: float | None = None) -> None:
        """Welcomed. Retries are then never further apart than the heartbeat interval: the node is declared
        down after four intervals of silence, and a gateway back within three must see it again in time."""
        self._up_since = self._clock()
        if heartbeat_interval_s is not None:
            self._cap_s = min(BACKOFF_CAP_S, heartbeat_interval_s)

    def next_delay(self) -> float:
        if self._up_since is not None and self._clock() - self._up_since > STABLE_AFTER_S:
            self._attempt = 0
        self._up_since = None
        delay = backoff_s(self._attempt, self._rng, cap_s=self._cap_s)
        self._attempt += 1
        return delay


def refusal(exc: BaseException) -> str | None:
    """Why the gateway refuses this node for good, or ``None`` when trying again may work."""
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
        meaning = protocol.REFUSING_CLOSE_CODES.get(exc.rcvd.code)
        if meaning is not None:
            reason = f" ({exc.rcvd.reason})" if exc.rcvd.reason else ""
            return f"the gateway closed the connection with code {exc.rcvd.code}{reason}: {meaning}"
    if isinstance(exc, InvalidStatus):
        meaning = protocol.REFUSING_HTTP_STATUSES.get(exc.response.status_code)
        if meaning is not None:
            return f"the gateway answered the handshake with HTTP {exc.response.status_code}: {meaning}"
    return None


class AgentConnection:
    """One node's connection to its gateway, kept up until ``stop()`` or a refusal."""

    def __init__(
        self,
        gateway_url: str,
        node_id: str,
        credential: str,
        *,
        usage: UsageSource,
        jobs: JobRunner,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        connect: Connect = open_websocket,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.url = protocol.connect_url(gateway_url)
        self.node_id = node_id
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._usage, self._connect, self._clock = usage, connect, clock
        self._jobs, self._drain_timeout_s = jobs, drain_timeout_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._draining = asyncio.Event()  # told to stop: jobs end, reports go out
        self._hurry = asyncio.Event()  # told twice: running jobs are killed at once
        self._stopping = asyncio.Event()  # drained: goodbye
        #: when the gateway was last heard from (a message, or the answer to a ping); None before the first welcome
        self._heard_at: float | None = None
        self._fence_after_s = FENCE_AFTER_INTERVALS * 5.0  # set by each welcome
        self._launcher_lease_s = LAUNCHER_LEASE_INTERVALS * 5.0  # likewise
        self._fenced = False  # the jobs were stopped since the gateway was last heard from

    def __repr__(self) -> str:  # the default would show the headers, credential included
        return f"AgentConnection({self.url!r}, node_id={self.node_id!r})"

    def stop(self) -> None:
        """Drain and leave: take no more jobs, let the running ones end (until the drain timeout, then kill them),
        wait a little for their reports to be acked, say goodbye when connected, then ``run`` returns
        ``EXIT_STOPPED``. A second call kills the running jobs at once.

        Synchronous, so that it can be an event loop's signal handler.
        """
        if self._draining.is_set():
            self._hurry.set()
        self._jobs.stop_accepting()  # at once: an assignment read after the signal is not taken
        self._draining.set()

    async def run(self) -> int:
        drainer = asyncio.create_task(self._drain_when_told())
        fencer = asyncio.create_task(self._fence_when_cut_off())
        leaseholder = asyncio.create_task(self._keep_launcher_alive())
        try:
            return await self._connect_until_stopped()
        finally:
            for task in (drainer, fencer, leaseholder):
                task.cancel()
            await asyncio.gather(drainer, fencer, leaseholder, return_exceptions=True)

    def _heard(self) -> None:
        self._heard_at, self._fenced = self._clock(), False

    async def _fence_when_cut_off(self) -> None:
        while True:
            await asyncio.sleep(self._fence_after_s / 12)  # a quarter of an interval, or less
            self._fence_if_cut_off()

    async def _keep_launcher_alive(self) -> None:
        """Renew the launcher's lease on the jobs while this event loop runs (``LAUNCHER_LEASE_INTERVALS``)."""
        while True:
            self._jobs.keep_launcher_alive(self._launcher_lease_s)
            await asyncio.sleep(min(LAUNCHER_LEASE_RENEWAL_S, self._launcher_lease_s / 10))

    def _fence_if_cut_off(self) -> None:
        """Stop the jobs once the gateway has been silent for ``FENCE_AFTER_INTERVALS`` heartbeat intervals."""
        if self._heard_at is None or self._fenced:
            return
        silent_s = self._clock() - self._heard_at
        if silent_s <= self._fence_after_s:
            return
        self._fenced = True
        why = (
            f"the node heard nothing from the platform for {silent_s:.0f}s: its jobs were stopped, because the"
            " platform counts them lost and runs them again elsewhere"
        )
        if self._jobs.fence(why):
            log.warning("nothing heard from the gateway for %.1fs: running jobs stopped", silent_s)

    async def _drain_when_told(self) -> None:
        await self._draining.wait()
        await self._jobs.drain(self._drain_timeout_s, self._hurry)
        if not await self._jobs.reports_acked(REPORTS_ACK_TIMEOUT_S, self._hurry):
            log.warning("leaving with %d job report(s) the gateway has not acked", len(self._jobs.unacked_reports))
        self._stopping.set()

    async def _connect_until_stopped(self) -> int:
        backoff = Backoff(self._rng, self._clock)
        while not self._stopping.is_set():
            try:
                await self._session(backoff)
            except _TRANSIENT as exc:
                why = refusal(exc)
                if why is not None:
                    log.error("not reconnecting: %s", why)
                    return EXIT_REFUSED
                if self._stopping.is_set():
                    break
                delay = backoff.next_delay()
                log.warning("connection to %s failed: %s; retrying in %.1fs", self.url, _describe(exc), delay)
                if await self._stopped_within(delay):
                    break
        log.info("stopped")
        return EXIT_STOPPED

    async def _session(self, backoff: Backoff) -> None:
        """One connection, from the handshake until it fails (raises) or the agent stops (returns)."""
        log.debug("connecting to %s", self.url)
        ws = await self._unless_stopped(self._connect(self.url, self._headers))
        if ws is None:
            return
        try:
            welcome = await self._unless_stopped(asyncio.wait_for(self._welcome(ws), WELCOME_TIMEOUT_S))
            if welcome is None:
                return
            backoff.connected(welcome.heartbeat_interval_s)
            self._fence_after_s = max(FENCE_FLOOR_S, FENCE_AFTER_INTERVALS * welcome.heartbeat_interval_s)
            self._launcher_lease_s = max(FENCE_FLOOR_S, LAUNCHER_LEASE_INTERVALS * welcome.heartbeat_interval_s)
            self._jobs.keep_launcher_alive(self._launcher_lease_s)
            self._jobs.fenced_by_launcher.clear()  # a new connection: its catch-up hands out what the node still has
            self._heard()
            if welcome.node_id != self.node_id:  # the gateway knows which node the credential is: heartbeat as that
                log.warning("the gateway welcomed node %s, but the state file names %s", welcome.node_id, self.node_id)
            log.info(
                "connected to %s as node %s; heartbeat every %gs",
                self.url,
                welcome.node_id,
                welcome.heartbeat_interval_s,
            )
            self._jobs.attach(_sender(ws, welcome.features))
            try:
                await self._serve(ws, welcome)
            finally:
                self._jobs.detach()
        finally:
            await ws.close()  # a normal closure; nothing happens when the connection is already closed

    async def _welcome(self, ws: Socket) -> Welcome:
        while True:
            message = self._decode(await ws.recv())
            if message is not None and message.get("type") == "welcome":
                return protocol.parse_welcome(message)
            if message is not None:
                self._handle(message)  # an error said before the welcome is still worth reading

    async def _serve(self, ws: Socket, welcome: Welcome) -> None:
        heartbeats = asyncio.create_task(self._heartbeats(ws, welcome))
        receiving = asyncio.create_task(self._receive(ws))
        stopping = asyncio.create_task(self._stopping.wait())
        fenced = asyncio.create_task(self._jobs.fenced_by_launcher.wait())
        tasks = (heartbeats, receiving, stopping, fenced)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()  # when stopping, the jobs have drained already: this is no more heartbeats
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._stopping.is_set():
            await self._goodbye(ws)
            return
        if self._jobs.fenced_by_launcher.is_set():
            # What was queued here is dropped, and may have been run elsewhere meanwhile: a new connection's
            # catch-up hands out again what the platform still has on this node.
            raise ConnectionResetError("the agent did not run for a while and its jobs were stopped; reconnecting")
        for task in (receiving, heartbeats):
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure

    async def _heartbeats(self, ws: Socket, welcome: Welcome) -> None:
        interval_s = welcome.heartbeat_interval_s  # the pace the gateway asked for
        give_up_after_s = max(FENCE_FLOOR_S, RECONNECT_AFTER_INTERVALS * interval_s)
        for seq in itertools.count(1):
            beat = protocol.heartbeat(welcome.node_id, seq, self._usage(), running_jobs=self._jobs.running_jobs)
            async with asyncio.timeout(give_up_after_s):  # a send held up that long: the connection does not move
                await ws.send(protocol.encode(beat))
                # A connection can look up while nothing gets through: a ping's answer shows the gateway hears.
                pong = asyncio.ensure_future(await ws.ping())
            pong.add_done_callback(self._on_pong)
            log.debug("heartbeat %d sent", seq)
            silent_s = self._clock() - (self._heard_at or 0.0)
            if silent_s > give_up_after_s:
                # Half-open (a NAT or a load balancer forgot it), it would look up for as long as TCP lets it:
                # a new connection may find a way through before the node is declared down.
                raise TimeoutError(f"nothing heard from the gateway for {silent_s:.1f}s, not even a ping's answer")
            await asyncio.sleep(interval_s)

    def _on_pong(self, pong: asyncio.Future[float]) -> None:
        if not pong.cancelled() and pong.exception() is None:  # the connection closed first: no answer
            self._heard()

    async def _receive(self, ws: Socket) -> None:
        while True:
            message = self._decode(await ws.recv())
            self._heard()
            if message is not None:
                self._handle(message)

    async def _goodbye(self, ws: Socket) -> None:
        # Best effort: the gateway notices a node that vanished anyway, only later.
        with contextlib.suppress(*_TRANSIENT):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await ws.send(protocol.encode(protocol.GOODBYE))
                await ws.close(1000, "shutdown")
                log.info("said goodbye to the gateway")

    @staticmethod
    def _decode(raw: str | bytes) -> dict[str, Any] | None:
        message = protocol.decode(raw)
        if message is None:
            log.warning("ignoring a message from the gateway that is not a JSON object")
        return message

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "error":
            log.warning("the gateway reports an error: %s (%s)", message.get("detail"), message.get("code"))
        elif kind == "assignment":
            self._jobs.assign(message)
        elif kind == "prepare":
            self._jobs.prepare(message)
        elif kind == "withdraw":
            self._jobs.withdraw(message)
        elif kind == "cancel":
            self._jobs.cancel(message)
        elif kind == "ack":
            self._jobs.ack(message)
        else:  # a newer gateway's message: not this agent's business
            log.debug("ignoring a %r message", kind)

    async def _unless_stopped(self, awaitable: Awaitable[T]) -> T | None:
        """``awaitable``'s result, or ``None`` when the agent is told to stop first (it is then cancelled)."""
        work = asyncio.ensure_future(awaitable)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait((work, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            work.cancel()  # nothing happens when it has finished
        if work in done:
            return work.result()  # or its exception
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return None

    async def _stopped_within(self, delay: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return self._stopping.is_set()


def _sender(ws: Socket, features: frozenset[str]) -> Send:
    """Reports to this connection's gateway, as much of them as it takes (``Welcome.features``)."""
    unknown = protocol.fields_not_taken(features)

    async def send(message: dict[str, Any]) -> None:
        if unknown and message["type"] == "finished":
            message = {field: value for field, value in message.items() if field not in unknown}
        await ws.send(protocol.encode(message))

    return send


def _describe(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__
