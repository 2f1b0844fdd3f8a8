"""One attempt of a job: started (from its preparation, if any), watched to its end, all it started killed."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from fog_agent import cgroups
from fog_agent.job_messages import Assignment, Outcome, Result
from fog_agent.launcher import LaunchedJob, Launcher, NotPrepared, PreparedJob
from fog_agent.protocol import MAX_MESSAGE_BYTES
from fog_agent.sandbox.files import read_outputs, write_inputs
from fog_agent.sandbox.users import NoJobUser
from fog_agent.sandbox.workdirs import Workdir, WorkdirRemover

if TYPE_CHECKING:
    from fog_agent.sandbox import Sandbox

log = logging.getLogger(__name__)

#: once the job's processes are gone, how long the last of its output may take to arrive: a process that
#: escaped the kill may hold the pipe open forever
OUTPUT_DRAIN_S = 2.0
#: a job's output pipe: the read end's transport and protocol, and the write end the job gets
_Pipe = tuple[asyncio.ReadTransport, "_Output", int]


class _Prepared:
    """A prepared attempt: its working directory, its output pipe, and the launcher's spare that holds it."""

    def __init__(
        self,
        assignment: Assignment,
        gpu_ids: tuple[int, ...] | None,
        workdir: Workdir,
        pipe: _Pipe,
        job: PreparedJob,
        expiry: asyncio.TimerHandle,
        removals: WorkdirRemover,
    ) -> None:
        self.assignment, self.gpu_ids, self.workdir, self.pipe = assignment, gpu_ids, workdir, pipe
        self.job, self.expiry, self._removals = job, expiry, removals

    async def release(self, launcher: Launcher) -> None:
        """Let the spare and the output pipe go; the working directory stays."""
        await launcher.withdraw(self.job)
        self.expiry.cancel()
        _close_pipe(self.pipe)

    async def discard(self, launcher: Launcher) -> None:
        await self.release(launcher)
        self._removals.remove(self.workdir)

    def close(self) -> None:
        """As ``discard``, once the launcher is gone (and its spares with it)."""
        self.expiry.cancel()
        _close_pipe(self.pipe)
        self._removals.remove(self.workdir)


class SandboxedJob:
    """One attempt: ``run()`` it once; ``cancel()`` or ``interrupt()`` it from elsewhere at any time."""

    def __init__(self, sandbox: Sandbox, assignment: Assignment, gpu_ids: Sequence[int] | None) -> None:
        self._sandbox, self.assignment, self._gpu_ids = sandbox, assignment, gpu_ids
        self.pid: int | None = None  # the job's first process (and its process group), once it started
        self._stop = asyncio.Event()
        self._stop_outcome: Outcome = "cancelled"
        self._stop_error: str | None = None
        self._output: _Output | None = None
        self._cgroup: Path | None = None  # where its processes are, when jobs get a cgroup

    @property
    def job_id(self) -> str:
        return self.assignment.job_id

    def printed(self) -> str:
        """What the attempt has printed so far (nothing before it starts)."""
        return "" if self._output is None else self._output.printed()

    def cancel(self) -> None:
        """The gateway cancelled the job: kill it; it ends ``cancelled``."""
        self._request_stop("cancelled", None)

    def interrupt(self, why: str) -> None:
        """The agent cannot let the job finish (it is shutting down): kill it; it ends ``failed`` with ``why``."""
        self._request_stop("failed", why)

    def _request_stop(self, outcome: Outcome, error: str | None) -> None:
        if not self._stop.is_set():  # the first reason is the one that counts
            self._stop_outcome, self._stop_error = outcome, error
            self._stop.set()

    async def run(self, on_started: Callable[[], None] = lambda: None) -> Result:
        """Run the attempt to its end; ``on_started`` is called once its process runs (never, if it cannot start)."""
        refusal = self._sandbox.refusal(self.assignment)
        if refusal is not None:
            return Result("failed", None, 0.0, error=refusal)
        prepared = await self._sandbox.take_prepared(self.assignment, self._gpu_ids)
        if prepared is not None:
            workdir = prepared.workdir
        else:
            try:
                workdir = self._sandbox.make_workdir(self.assignment)
            except OSError as exc:
                return Result("failed", None, 0.0, error=f"cannot create a working directory: {_describe(exc)}")
            except NoJobUser as exc:
                return Result("failed", None, 0.0, error=str(exc))
        try:
            return await self._run_in(workdir, on_started, prepared)
        finally:
            self._remove(workdir)

    async def _run_in(self, workdir: Workdir, on_started: Callable[[], None], prepared: _Prepared | None) -> Result:
        if self._stop.is_set():  # cancelled before it could start
            if prepared is not None:
                await prepared.release(self._sandbox.launcher)  # its directory goes with the attempt's, below
            return Result(self._stop_outcome, None, 0.0, error=self._stop_error)
        pipe = prepared.pipe if prepared is not None else await _open_output(_output_limit(self.assignment))
        output_transport, output, write_end = pipe
        self._output = output
        try:
            try:
                if self.assignment.files:
                    await asyncio.to_thread(write_inputs, workdir, self.assignment.files)
            except OSError as exc:
                if prepared is not None:
                    await prepared.release(self._sandbox.launcher)  # its spare, and both ends of the pipe
                else:
                    os.close(write_end)
                return Result("failed", None, 0.0, error=f"cannot write its files: {_describe(exc)}")
            try:
                process = await self._spawn(workdir, write_end, prepared)
            except OSError as exc:  # not found, not executable, NUL in it (the launcher gives the errno)
                why = f"cannot start {self.assignment.command[0]!r}: {_describe(exc)}"
                return Result("failed", None, 0.0, error=why)
            finally:
                os.close(write_end)  # the job holds it now: the pipe ends when the job's last process does
            self.pid, self._cgroup = process.pid, process.cgroup
            on_started()
            began = time.monotonic()
            try:
                with self._sandbox.watching_disk(self, workdir.path):
                    stopped_as = await self._supervise(process)
            finally:
                # What the job left running dies with it; everything does when this coroutine is cancelled.
                self._kill_all(process.pid)
            duration_s = time.monotonic() - began
            await asyncio.wait((output.closed,), timeout=OUTPUT_DRAIN_S)
            outputs = self.assignment.outputs
            files = await asyncio.to_thread(read_outputs, workdir, outputs) if outputs else ()
            return dataclasses.replace(
                self._result(stopped_as, process.returncode, duration_s, output),
                cpu_s=None if process.usage is None else process.usage.cpu_s,
                max_rss_bytes=None if process.usage is None else process.usage.max_rss_bytes,
                files=files,
            )
        finally:
            output_transport.close()

    async def _spawn(self, workdir: Workdir, write_end: int, prepared: _Prepared | None) -> LaunchedJob:
        launcher = self._sandbox.launcher
        if prepared is not None:
            with contextlib.suppress(NotPrepared):  # the launcher was started anew since: ask it the usual way
                return await launcher.go(prepared.job)
        return await launcher.start(self._sandbox.program(self.assignment, workdir, self._gpu_ids), write_end)

    async def _supervise(self, process: LaunchedJob) -> Outcome | None:
        """``None`` when the job's first process exited by itself, else the outcome it was stopped with."""
        exited = asyncio.ensure_future(process.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                (exited, stop), timeout=self.assignment.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            exited.cancel()
            stop.cancel()
        if exited in done:
            return None
        outcome: Outcome = self._stop_outcome if stop in done else "timed_out"
        await self._terminate(process)
        return outcome

    async def _terminate(self, process: LaunchedJob) -> None:
        # Without a cgroup, descendants that left the process group are found while their parents still live.
        tree = _descendants(process.pid) if self._cgroup is None else _members(self._cgroup)
        _signal_tree(process.pid, signal.SIGTERM, tree)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), self._sandbox.kill_grace_s)
        self._kill_all(process.pid, tree)
        await process.wait()

    def _kill_all(self, pid: int, tree: Iterable[psutil.Process] = ()) -> None:
        """SIGKILL to the job's process group, and to its cgroup (all of it, whatever session) or else ``tree``."""
        if self._cgroup is not None:
            cgroups.kill(self._cgroup)
        _signal_tree(pid, signal.SIGKILL, tree)

    def _result(self, stopped_as: Outcome | None, code: int | None, duration_s: float, output: _Output) -> Result:
        text, truncated = output.text(), output.truncated
        if stopped_as is None and code is not None and code < 0 and self._stop.is_set():
            # Killed by a signal as its stop was asked (the launcher fenced it): the stop says why.
            stopped_as = self._stop_outcome
        if stopped_as == "timed_out" and self._stop_error is None:
            error = f"ran past its timeout of {self.assignment.timeout_s:g} s: stopped"
            return Result(stopped_as, code, duration_s, text, truncated, error)
        if stopped_as is not None:
            return Result(stopped_as, code, duration_s, text, truncated, self._stop_error)
        if code == 0:
            return Result("succeeded", 0, duration_s, text, truncated)
        return Result("failed", code, duration_s, text, truncated, _death(code))

    def _remove(self, workdir: Workdir) -> None:
        if self._sandbox.keep_workdirs:  # and its uid, never given to another job while this agent runs
            log.info("keeping the working directory of job %s: %s", self.assignment.job_id, workdir.path)
            self._sandbox.removals.remove(None, self._cgroup)
            return
        self._sandbox.removals.remove(workdir, self._cgroup)


class _Output(asyncio.Protocol):
    """Keeps the first ``limit`` bytes of the job's output and drops the rest, reading on: the pipe never fills."""

    def __init__(self, limit: int) -> None:
        self._limit, self._kept = limit, 0
        self._chunks: list[bytes] = []
        self.truncated = False
        self.closed = asyncio.get_running_loop().create_future()
        # What printed() has decoded: its text is always a beginning of text()'s, a character cut
        # between two reads of the pipe waiting in the decoder for its other bytes.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoded_chunks = 0
        self._printed = ""

    def data_received(self, data: bytes) -> None:
        room = self._limit - self._kept
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self._chunks.append(data)
            self._kept += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace")

    def printed(self) -> str:
        """What the job has printed so far, as text (with what is kept of it: the first ``limit`` bytes)."""
        fresh = self._chunks[self._decoded_chunks :]
        if fresh:
            self._printed += self._decoder.decode(b"".join(fresh))
            self._decoded_chunks = len(self._chunks)
        return self._printed


def _output_limit(assignment: Assignment) -> int:
    return min(assignment.output_limit_bytes, MAX_MESSAGE_BYTES)  # no more could ever be sent


def _close_pipe(pipe: _Pipe) -> None:
    transport, _, write_end = pipe
    transport.close()
    with contextlib.suppress(OSError):  # closed already, once the job had it
        os.close(write_end)


def _ids(gpu_ids: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if gpu_ids is None else tuple(gpu_ids)


async def _open_output(limit: int) -> tuple[asyncio.ReadTransport, _Output, int]:
    """A pipe for the job's stdout and stderr: its read end served by an ``_Output``, and its write end.

    The agent's own pipe, not asyncio's ``PIPE``: it can stop reading (close its end) when a process that
    escaped the kill keeps the pipe open.
    """
    read_end, write_end = os.pipe()
    try:
        transport, output = await asyncio.get_running_loop().connect_read_pipe(
            lambda: _Output(limit), os.fdopen(read_end, "rb", buffering=0)
        )
    except BaseException:
        os.close(write_end)
        raise
    return transport, output, write_end


def _members(cgroup: Path) -> list[psutil.Process]:
    members = []
    for pid in cgroups.processes(cgroup):
        with contextlib.suppress(psutil.Error):  # gone since
            members.append(psutil.Process(pid))
    return members


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_tree(pgid: int, signum: int, descendants: Iterable[psutil.Process] = ()) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left to signal
        os.killpg(pgid, signum)
    for process in descendants:
        with contextlib.suppress(psutil.Error):  # psutil refuses a pid that now names another process
            process.send_signal(signum)


def _death(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    if -code == signal.SIGXCPU:
        return "killed by SIGXCPU: the job used more CPU time than its timeout allows its cores"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__
