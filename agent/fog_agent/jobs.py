"""The node's jobs: which run, which wait, and what the gateway has yet to hear about them.

Capacity: the node offers the cores and GPUs measured when ``fog-agent run`` starts. A job starts only
when its ``resources.cpu_cores`` and ``resources.gpus`` fit in what the running jobs leave free; until
then it waits in a queue. The queue is first in, first out, strictly: a small job does not overtake a
bigger one ahead of it, which could starve the big one for ever. A job that asks for more than the
whole node (the scheduler placed it by capabilities this machine no longer has) runs alone, once the
node is idle, rather than wait for ever. Cores are counted in thousandths, so that 0.1 + 0.2 fits in 0.3.

Reports: every ``started`` and ``finished`` is kept until the gateway acks it. It is sent at once when
connected, and all unacked reports are sent again, in order, on each new connection (``attach``). An
ack of ``finished`` settles the attempt's ``started`` too.

Output so far: while connected, every ``OUTPUT_EVERY_S`` each running job that printed something new is
reported (``output``), from the first character the gateway has not acked: a lost report is made good by
the next one, and only the latest is kept to send again. A job that ends sooner is never reported so:
its output comes whole with its ``finished``, which settles its ``output`` too.

Duplicates: the gateway sends outstanding assignments again on each connection, and may send a new
one twice (pushed, then from its event), so an assignment of an attempt that is queued, running, or
ended (acked or not; the last ``REMEMBERED_ENDED``) is ignored. So is one whose cancel came first.

Preparing (``prepare``): the gateway may say that a job is about to be assigned here, while its placement
commits. If it would start at once (nothing queued, it fits, it asks for no GPU), the sandbox prepares it
(``Sandbox.prepare_job``), and its assignment finds it ready; ``withdraw`` (its placement did not commit),
or a cancel, undoes that. A preparation never runs anything, nor takes capacity; at most ``MAX_PREPARED``
are held at once.

Cut off (``fence``): when the agent has heard nothing from its gateway for most of the time after which
the platform declares the node down (and runs its jobs elsewhere), it kills its running jobs (reported
``failed`` once it is back) and drops the queued ones: a job never runs here beside its next attempt.

Shutdown (``drain``): new assignments are ignored; queued ones are dropped without a report (they never
started: the gateway hands them out again once the node has left); running ones may finish until the
drain timeout, then are killed and reported ``failed``, so that the scheduler may retry them elsewhere
(``cancelled`` would end them for good, as if their owner had asked).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fog_agent import job_messages
from fog_agent.job_messages import Assignment, BadMessage, JobKey, ReportKind, Result
from fog_agent.sandbox import Sandbox, SandboxedJob

log = logging.getLogger(__name__)

#: sends one message to the gateway; raises when the connection is gone
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: ended attempts remembered to ignore a late duplicate of their assignment
REMEMBERED_ENDED = 4096
#: jobs prepared at once, at most (lone jobs, each assigned a few milliseconds after its preparation)
MAX_PREPARED = 8
#: how often what running jobs printed is sent on
OUTPUT_EVERY_S = 1.0
_MILLI = 1000


@dataclass(frozen=True)
class Capacity:
    """What the node offers its jobs together."""

    cpu_cores: float
    gpus: int = 0


@dataclass
class _Running:
    job: SandboxedJob
    millicores: int
    gpu_ids: tuple[int, ...]
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class JobRunner:
    """Runs the gateway's assignments within the node's capacity and reports on them until acked."""

    def __init__(self, sandbox: Sandbox, capacity: Capacity) -> None:
        self._sandbox = sandbox
        self._cpu_capacity = max(1, round(capacity.cpu_cores * _MILLI))
        self._gpu_capacity = max(0, capacity.gpus)
        self._free_millicores = self._cpu_capacity
        self._free_gpus = list(range(self._gpu_capacity))
        self._queue: deque[Assignment] = deque()
        self._running: dict[JobKey, _Running] = {}
        self._ended: OrderedDict[JobKey, None] = OrderedDict()
        self._unacked: dict[tuple[JobKey, ReportKind], dict[str, Any]] = {}
        self._outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._streamer: asyncio.Task[None] | None = None
        #: per running attempt: the characters of its output the gateway has (acked), and those sent
        self._output_acked: dict[JobKey, int] = {}
        self._output_sent: dict[JobKey, int] = {}
        self._accepting = True
        self._idle, self._all_acked = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._all_acked.set()
        #: set when the launcher stopped the jobs of an agent it had not heard from (``launcher_fenced``)
        self.fenced_by_launcher = asyncio.Event()
        sandbox.launcher.on_fenced = self.launcher_fenced

    @property
    def networks(self) -> tuple[str, ...]:
        """The networks this node gives its jobs (``Sandbox.networks``)."""
        return self._sandbox.networks

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    @property
    def unacked_reports(self) -> list[dict[str, Any]]:
        return list(self._unacked.values())

    # -- what the gateway says ----------------------------------------------------------------------------------

    def assign(self, message: dict[str, Any]) -> None:
        try:
            assignment = job_messages.parse_assignment(message)
        except BadMessage as exc:
            self._refuse(exc)
            return
        key = assignment.key
        if self._knows(key):
            log.debug("job %s attempt %d: a repeated assignment, ignored", *key)
        elif not self._accepting:
            log.info("job %s attempt %d: not taken, the agent is shutting down", *key)
        else:
            self._queue.append(assignment)
            self._idle.clear()
            self._pump()

    def prepare(self, message: dict[str, Any]) -> None:
        try:
            assignment = job_messages.parse_assignment(message)
        except BadMessage as exc:  # its assignment, if it comes, is refused and reported
            log.debug("not preparing a job: %s", exc)
            return
        if assignment.resources.gpus or self._queue or self._knows(assignment.key) or not self._accepting:
            return  # which GPUs it gets is known once it starts; and a job that would wait gains nothing
        if self._sandbox.prepared_jobs >= MAX_PREPARED:
            return  # each holds a process: preparations that never turn into assignments must not pile up
        if self._fits(assignment):
            self._sandbox.prepare_job(assignment, gpu_ids=() if self._gpu_capacity else None)

    def withdraw(self, message: dict[str, Any]) -> None:
        try:
            self._sandbox.withdraw_job(job_messages.job_key(message))
        except BadMessage as exc:
            log.debug("ignoring a withdrawal: %s", exc)

    def cancel(self, message: dict[str, Any]) -> None:
        try:
            key = job_messages.job_key(message)
        except BadMessage as exc:
            log.warning("ignoring a cancel: %s", exc)
            return
        running = self._running.get(key)
        if running is not None:
            log.info("job %s attempt %d: cancelling", *key)
            running.job.cancel()
            return
        queued = next((assignment for assignment in self._queue if assignment.key == key), None)
        if queued is None:
            # Assignments may come by a faster path than cancels, but not always first: one of this
            # attempt arriving after its cancel must not run (the scheduler has ended it already).
            if not self._knows(key):
                self._remember_ended(key)
            self._sandbox.withdraw_job(key)
            log.debug("job %s attempt %d: nothing to cancel", *key)
            return
        self._queue.remove(queued)
        log.info("job %s attempt %d: cancelled before it started", *key)
        self._end(key, Result("cancelled", None, 0.0))
        self._pump()  # the head of the queue may have been what held the others

    def ack(self, message: dict[str, Any]) -> None:
        try:
            ack = job_messages.parse_ack(message)
        except BadMessage as exc:
            log.warning("ignoring an ack: %s", exc)
            return
        key = ack.key
        if ack.report == "output":
            self._output_acked_through(key, ack.through)
        else:
            self._unacked.pop((key, ack.report), None)
        if ack.report == "finished":  # the scheduler has the end: the start, and the output so far, no longer matter
            self._unacked.pop((key, "started"), None)
            self._unacked.pop((key, "output"), None)
        if not self._unacked:
            self._all_acked.set()

    # -- the connection -----------------------------------------------------------------------------------------

    def attach(self, send: Send) -> None:
        """A connection is up: send it every unacked report, in order, then each new one."""
        self.detach()
        self._outbox = asyncio.Queue()
        for report in self._unacked.values():
            self._outbox.put_nowait(report)
        self._sender = asyncio.create_task(_deliver(send, self._outbox), name="job reports")
        self._output_sent = dict(self._output_acked)  # what was sent and not acked is sent again
        self._streamer = asyncio.create_task(self._stream_output(), name="job output")

    def detach(self) -> None:
        """The connection is gone: reports wait for the next one."""
        for task in (self._sender, self._streamer):
            if task is not None:
                task.cancel()
        self._sender = self._streamer = None
        self._outbox = None

    # -- shutting down ------------------------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Take no more jobs, and drop those that wait: they never started, and the gateway hands them out again."""
        self._accepting = False
        for assignment in self._queue:
            log.info("job %s attempt %d: dropped from the queue, the agent is shutting down", *assignment.key)
        self._queue.clear()
        self._update_idle()

    def fence(self, why: str) -> int:
        """The node has been cut off from the platform so long that it counts this node's jobs lost and runs
        them elsewhere: kill the running ones (each ends ``failed`` with ``why``) and drop the queued ones, so
        that no job runs here beside its next attempt. How many were running.

        Queued ones are dropped without a report and not remembered: if the platform still has them here
        when the node is back, the gateway hands them out again, and they run then.
        """
        for assignment in self._queue:
            log.warning("job %s attempt %d: dropped from the queue, the node is cut off", *assignment.key)
        self._queue.clear()
        for key, running in self._running.items():
            log.warning("job %s attempt %d: killed, the node is cut off", *key)
            running.job.interrupt(why)
        self._update_idle()
        return len(self._running)

    def keep_launcher_alive(self, lease_s: float) -> None:
        """The agent runs: its launcher may let the jobs run ``lease_s`` more seconds (``Launcher.keep_alive``)."""
        self._sandbox.launcher.keep_alive(lease_s)

    def launcher_fenced(self, silent_s: float) -> None:
        """The launcher heard nothing from this agent for ``silent_s`` (stopped, frozen, starved of CPU), and
        killed its jobs, as the node was about to be declared down: they end ``failed`` with the reason, and the
        queued ones are dropped, as when the node is cut off (``fence``). Sets ``fenced_by_launcher``: the
        connection starts anew, and the gateway hands out again what the platform still has on this node."""
        why = (
            f"the agent did not run for {silent_s:.0f}s (stopped, or frozen): its job launcher stopped its jobs,"
            " because the platform counts them lost and runs them again elsewhere"
        )
        log.warning("the job launcher heard nothing from the agent for %.1fs and stopped its jobs", silent_s)
        self.fence(why)
        self.fenced_by_launcher.set()

    async def drain(self, timeout_s: float, hurry: asyncio.Event) -> None:
        """Take no more jobs, let the running ones end until ``timeout_s`` (or ``hurry``), then kill them."""
        self.stop_accepting()
        if self._running:
            log.info("waiting up to %gs for %d running job(s) to end", timeout_s, len(self._running))
        await _any_set((self._idle, hurry), timeout_s)
        why = f"the node's agent shut down before the job ended (drain timeout {timeout_s:g}s)"
        for key, running in self._running.items():
            log.warning("job %s attempt %d: killed, the agent is shutting down", *key)
            running.job.interrupt(why)
        await self._idle.wait()

    async def reports_acked(self, timeout_s: float, hurry: asyncio.Event) -> bool:
        """Whether the gateway acked every report within ``timeout_s`` (without ``hurry``)."""
        await _any_set((self._all_acked, hurry), timeout_s)
        return self._all_acked.is_set()

    async def close(self) -> None:
        """Kill whatever still runs, without reports: the agent is leaving now."""
        self._accepting = False
        self._queue.clear()
        self.detach()
        tasks = [running.task for running in self._running.values() if running.task is not None]
        for task in tasks:
            task.cancel()  # the sandbox kills the job's process tree as it unwinds
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()  # a task cancelled before it ran never got to remove its job
        await self._sandbox.close()
        await self._sandbox.removals.finished()  # no working directory is left behind
        await self._sandbox.remove_cgroups()

    # -- running ------------------------------------------------------------------------------------------------

    def _pump(self) -> None:
        while self._queue and self._fits(self._queue[0]):
            self._start(self._queue.popleft())
        self._update_idle()

    def _demand(self, assignment: Assignment) -> tuple[int, int]:
        # More than the node has means all of it: the job runs alone instead of waiting for ever.
        millicores = max(1, round(assignment.resources.cpu_cores * _MILLI))
        return min(millicores, self._cpu_capacity), min(assignment.resources.gpus, self._gpu_capacity)

    def _fits(self, assignment: Assignment) -> bool:
        millicores, gpus = self._demand(assignment)
        return millicores <= self._free_millicores and gpus <= len(self._free_gpus)

    def _start(self, assignment: Assignment) -> None:
        millicores, gpus = self._demand(assignment)
        if self._oversized(assignment):
            log.warning("job %s attempt %d asks for more than this node has: it runs alone", *assignment.key)
        gpu_ids, self._free_gpus = tuple(self._free_gpus[:gpus]), self._free_gpus[gpus:]
        self._free_millicores -= millicores
        # Without GPUs on the node there is nothing to hide; with some, a job sees only those it was given.
        job = self._sandbox.job(assignment, gpu_ids=gpu_ids if self._gpu_capacity else None)
        running = _Running(job, millicores, gpu_ids)
        self._running[assignment.key] = running
        running.task = asyncio.create_task(self._execute(assignment.key, running), name=f"job {assignment.job_id}")

    def _oversized(self, assignment: Assignment) -> bool:
        wanted = assignment.resources
        return round(wanted.cpu_cores * _MILLI) > self._cpu_capacity or wanted.gpus > self._gpu_capacity

    async def _execute(self, key: JobKey, running: _Running) -> None:
        log.info("job %s attempt %d: starting", *key)
        try:
            # Reported once its process runs, not before: the report's way to the scheduler would compete with
            # the spawn for the CPU, and a job that cannot start never ran.
            result = await running.job.run(on_started=lambda: self._report(job_messages.started(key)))
        except Exception as exc:  # a bug, or the machine (no file descriptors left): the gateway must still hear
            log.exception("job %s attempt %d: the agent failed to run it", *key)
            result = Result("failed", None, 0.0, error=f"the agent could not run the job ({exc.__class__.__name__})")
        finally:
            del self._running[key]
            self._free_millicores += running.millicores
            self._free_gpus = sorted(self._free_gpus + list(running.gpu_ids))
        log.info(
            "job %s attempt %d: %s (exit code %s, %.1fs)", *key, result.outcome, result.exit_code, result.duration_s
        )
        self._end(key, result)
        self._pump()

    # -- output so far ------------------------------------------------------------------------------------------

    async def _stream_output(self) -> None:
        while True:
            await asyncio.sleep(OUTPUT_EVERY_S)  # a period, not a synchronisation
            self.send_output_so_far()

    def send_output_so_far(self) -> None:
        """Report what each running job printed since the last report (from the first character not acked)."""
        for key, running in self._running.items():
            printed = running.job.printed()
            if len(printed) <= self._output_sent.get(key, 0):
                continue
            acked = self._output_acked.get(key, 0)
            report = job_messages.output_so_far(key, acked, printed[acked:])
            self._output_sent[key] = acked + len(report["data"])
            self._report(report)

    def _output_acked_through(self, key: JobKey, through: int) -> None:
        if key not in self._running:
            return
        self._output_acked[key] = max(self._output_acked.get(key, 0), through)
        unacked = self._unacked.get((key, "output"))
        if unacked is not None and unacked["offset"] + len(unacked["data"]) <= through:
            self._unacked.pop((key, "output"))  # ack() then says whether every report is acked

    def _end(self, key: JobKey, result: Result) -> None:
        self._output_acked.pop(key, None)
        self._output_sent.pop(key, None)
        self._unacked.pop((key, "output"), None)  # the finished report carries the whole output
        self._remember_ended(key)
        self._report(job_messages.finished(key, result))
        self._update_idle()

    def _remember_ended(self, key: JobKey) -> None:
        self._ended[key] = None
        while len(self._ended) > REMEMBERED_ENDED:
            self._ended.popitem(last=False)

    def _refuse(self, exc: BadMessage) -> None:
        if exc.key is None:  # nothing to report on
            log.warning("ignoring an assignment: %s", exc)
        elif not self._knows(exc.key):
            log.warning("job %s attempt %d: cannot run it: %s", *exc.key, exc)
            self._end(exc.key, Result("failed", None, 0.0, error=f"the agent cannot run this assignment: {exc}"))

    def _knows(self, key: JobKey) -> bool:
        return (
            key in self._running
            or key in self._ended
            or (key, "finished") in self._unacked
            or any(assignment.key == key for assignment in self._queue)
        )

    def _update_idle(self) -> None:
        if self._running or self._queue:
            self._idle.clear()
        else:
            self._idle.set()

    def _report(self, report: dict[str, Any]) -> None:
        key: JobKey = (report["job_id"], report["attempt"])
        self._unacked[(key, report["type"])] = report
        self._all_acked.clear()
        if self._outbox is not None:
            self._outbox.put_nowait(report)


async def _deliver(send: Send, outbox: asyncio.Queue[dict[str, Any]]) -> None:
    while True:
        report = await outbox.get()
        try:
            await send(report)
        except Exception as exc:  # the connection is gone; it reconnects, and the report stays unacked until then
            log.debug("a job report was not sent: %s", exc.__class__.__name__)
            return


async def _any_set(events: tuple[asyncio.Event, ...], timeout_s: float) -> bool:
    """Wait until one of ``events`` is set or ``timeout_s`` passes; whether one is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return any(event.is_set() for event in events)
