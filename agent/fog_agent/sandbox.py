"""Run one job attempt as a sandboxed subprocess.

Every attempt gets:

- a fresh working directory under the work root (``<state dir>/work`` unless told otherwise), which is
  also its ``HOME``, removed afterwards unless ``FOG_AGENT_KEEP_WORKDIRS`` is set. Removed in a thread,
  once the attempt's result is out (``WorkdirRemover``), never on the event loop: on a journaled file
  system busy with others' fsyncs, one ``rmdir`` of an empty directory took 0.8 ms at the median and
  2.5 ms at p90 (bench/jobs.py, ext4 beside Postgres and NATS), and the agent could do nothing else
  meanwhile;
- a clean environment (``job_environment``): nothing of the agent's own (its credential, its ``FOG_*``);
- resource limits (``rlimits_for``), set between fork and exec by the agent's job launcher
  (``fog_agent.launcher``), a small process that forks the jobs so that the agent need not copy itself;
- a session of its own, so that one ``killpg`` reaches its whole process tree: on a timeout or a cancel
  (SIGTERM, then SIGKILL after a grace), and as soon as its first process exits (whatever that left
  running in the background dies with it: a job does not outlive itself);
- when the agent runs as root, an unprivileged user (``nobody`` or ``$FOG_AGENT_JOB_USER``) with no
  supplementary groups, which owns the working directory;
- where the kernel has Landlock (Linux 5.13 on), a file system of its own (``Confinement``): it reads and
  runs what the system has installed, and changes its working directory alone. So it cannot read the
  agent's state (its credential) nor another job's directory, even as the same user; from Linux 6.12 on it
  cannot signal the agent or other jobs either;
- where the agent may make cgroups (``fog_agent.cgroups``), a cgroup of its own, which the launcher's spare
  joins before it becomes the job: everything the job forks is in it, and dies with the job (``cgroup.kill``),
  even a process that left the session and outlived its parent.

A job may be *prepared* while its placement commits (``Sandbox.prepare_job``, on the scheduler's word that
it is about to be assigned here): its working directory and output pipe are made, and a spare of the
launcher takes every step before the exec. Its assignment then finds it ready (``SandboxedJob.run``);
a withdrawal, or ``PREPARED_FOR_S`` without one, undoes it, and nothing has run.

This is not a container. Without a cgroup, a process that leaves the session (``setsid``) and outlives its
parent escapes the kill; without Landlock, a job reads whatever its user may read (when the agent is not root,
that includes the agent's state file); the jobs of a node share one user; memory is limited per process
(address space), not per job.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import functools
import logging
import math
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from fog_agent import cgroups
from fog_agent.cgroups import JobCgroups
from fog_agent.job_messages import MIB, Assignment, JobKey, Outcome, Result
from fog_agent.launcher import JobProgram, LaunchedJob, Launcher, NotPrepared, PreparedJob
from fog_agent.launcher_process import landlock_abi
from fog_agent.protocol import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_JOB_USER = "nobody"
#: the least address space a job gets, whatever it asked for: with less, a shell or Python cannot even start
MIN_ADDRESS_SPACE = 64 * MIB
MAX_OPEN_FILES = 1024
#: RLIMIT_NPROC counts every process (thread, even) of the *user*, not of the job. With a dedicated job user it
#: caps the node's jobs together, which is what stops a fork bomb. Jobs that run as the agent's own user (the
#: agent is not root) get none: the user's other processes would count against it, and fail the job at random.
MAX_PROCESSES = 256
#: RLIMIT_CPU is a backstop for when the agent is no longer there to enforce the timeout (it crashed). It allows
#: what the job's cores can burn in its timeout and a little more, so that the wall-clock timeout comes first.
CPU_SLACK_S = 1
#: between the soft CPU limit (SIGXCPU, which a process may catch) and the hard one (SIGKILL)
CPU_HARD_AFTER_S = 5
#: how long a job may take to end after SIGTERM before it gets SIGKILL
KILL_GRACE_S = 2.0
#: once the job's processes are gone, how long the last of its output may take to arrive: a process that
#: escaped the kill may hold the pipe open forever
OUTPUT_DRAIN_S = 2.0
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")
#: how long a prepared job waits for its assignment: it comes a few milliseconds after its placement commits, or
#: from its ``job.assigned`` event when the push was lost; a placement that never committed sends no withdrawal
#: when its scheduler died
PREPARED_FOR_S = 30.0
#: one resource limit, as ``resource.setrlimit`` takes it
Rlimit = tuple[int, tuple[int, int]]


#: what a confined job may read and run, beneath: the system's programs, libraries and settings, the kernel's
#: views of itself, devices (their modes still apply), and where DNS settings live on systemd and resolvconf
JOB_READ_PATHS = (
    "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/opt", "/etc", "/proc", "/sys", "/dev",
    "/run/systemd/resolve", "/run/resolvconf", "/nix/store", "/snap",
)  # fmt: skip
#: what a confined job may change besides its working directory (its ``TMPDIR`` too): a few devices, and
#: ``/dev/shm``, where POSIX semaphores and shared memory live (Python's multiprocessing needs it)
JOB_WRITE_PATHS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm")  # noqa: S108
#: what a job given GPUs may also change: the driver's control devices, with ``/dev/nvidia<N>`` for each GPU it has
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset",
                          "/dev/nvidia-caps")  # fmt: skip
NVIDIA_GPU_DEVICE = "/dev/nvidia{}"


class SandboxError(Exception):
    """The sandbox cannot be set up as configured (the agent cannot run jobs safely)."""


@dataclass(frozen=True)
class JobUser:
    """Who jobs run as when the agent is root."""

    name: str
    uid: int
    gid: int


def job_user_from_env(environ: Mapping[str, str] = os.environ, *, euid: int | None = None) -> JobUser | None:
    """The user jobs run as, or ``None`` when the agent is not root (jobs then run as the agent's user)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    name = environ.get("FOG_AGENT_JOB_USER") or DEFAULT_JOB_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(f"the job user {name!r} does not exist; create it or set FOG_AGENT_JOB_USER") from None
    if entry.pw_uid == 0:
        raise SandboxError(f"the job user {name!r} is root: jobs never run as root")
    return JobUser(name, entry.pw_uid, entry.pw_gid)


def refuse_unconfined(
    user: JobUser | None, confinement: Confinement | None, environ: Mapping[str, str] = os.environ
) -> None:
    """Raise unless jobs are kept from the agent's files, or the owner allows them not to be.

    Jobs of an agent that is not root run as its own user; without Landlock, nothing then keeps them from reading
    its state file. With the node's credential, another user's job could connect as the node, be handed the next
    jobs placed on it (their environments, their data) and report made-up results. So that takes
    ``FOG_AGENT_ALLOW_UNCONFINED_JOBS=yes``: a machine whose only jobs are its owner's (``fogctl dev up``).
    """
    if user is None and confinement is None and not _yes(environ.get("FOG_AGENT_ALLOW_UNCONFINED_JOBS", "")):
        raise SandboxError(
            "jobs would run as this user with nothing to keep them from the node's credential (no Landlock: a "
            "kernel before 5.13, without it in lsm=, or FOG_AGENT_LANDLOCK=off); run the agent as root (jobs then "
            "run as nobody) or with Landlock, or set FOG_AGENT_ALLOW_UNCONFINED_JOBS=yes if only your own jobs "
            "run here"
        )


def keep_workdirs_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    return _yes(environ.get("FOG_AGENT_KEEP_WORKDIRS", ""))


def _yes(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Confinement:
    """What jobs may reach of the file system (Landlock, ``launcher_process.confine``): read and run beneath
    ``read``, change beneath ``write`` and their own working directory."""

    abi: int
    read: tuple[str, ...] = JOB_READ_PATHS
    write: tuple[str, ...] = JOB_WRITE_PATHS

    def policy(self, gpu_ids: Sequence[int] | None = None) -> dict[str, object]:
        """As the launcher takes it; a job may change its working directory too, and the device files of the
        GPUs it was given."""
        if not gpu_ids:
            return self._policy
        gpus = (*NVIDIA_CONTROL_DEVICES, *(NVIDIA_GPU_DEVICE.format(gpu) for gpu in gpu_ids))
        return {**self._policy, "write": [*self._policy["write"], *_effective(gpus)]}

    @functools.cached_property
    def _policy(self) -> dict[str, Any]:
        # Each rule costs every job's start a little: only paths that are there, each once (/bin is /usr/bin).
        return {"abi": self.abi, "read": _effective(self.read), "write": _effective(self.write)}


def _effective(paths: Iterable[str]) -> list[str]:
    """The paths that exist, as they really are, less those beneath another (it covers them)."""
    real = list(dict.fromkeys(os.path.realpath(path) for path in paths if os.path.exists(path)))
    return [path for path in real if not any(path.startswith(other.rstrip("/") + "/") for other in real)]


def confinement_from_env(environ: Mapping[str, str] = os.environ, *, abi: int | None = None) -> Confinement | None:
    """Landlock for jobs where the kernel has it, unless ``FOG_AGENT_LANDLOCK`` is off. Paths to add, separated by
    ``:``: ``FOG_AGENT_JOB_READ_PATHS`` (read and run beneath), ``FOG_AGENT_JOB_WRITE_PATHS`` (change beneath)."""
    if not _yes(environ.get("FOG_AGENT_LANDLOCK", "on")):
        return None
    abi = landlock_abi() if abi is None else abi
    if abi == 0:
        return None
    read, write = (_paths(environ.get(f"FOG_AGENT_JOB_{kind}_PATHS", "")) for kind in ("READ", "WRITE"))
    return Confinement(abi, JOB_READ_PATHS + read, JOB_WRITE_PATHS + write)


def _paths(value: str) -> tuple[str, ...]:
    paths = tuple(path for path in value.split(os.pathsep) if path)
    relative = [path for path in paths if not os.path.isabs(path)]
    if relative:
        raise SandboxError(f"paths for jobs must be absolute: {', '.join(relative)}")
    return paths


def job_environment(assignment: Assignment, home: Path, gpu_ids: Sequence[int] | None = None) -> dict[str, str]:
    """The job's ``env`` over defaults for ``PATH`` and ``LANG``; ``HOME`` and ``FOG_JOB_*`` are facts it cannot change.

    ``gpu_ids`` (when the node has GPUs) become ``CUDA_VISIBLE_DEVICES``: a job sees the GPUs it was given, and
    a job that asked for none sees none.
    """
    env = {"PATH": PATH, "LANG": "C.UTF-8", "TMPDIR": str(home), **assignment.env}
    env.update(HOME=str(home), FOG_JOB_ID=assignment.job_id, FOG_JOB_ATTEMPT=str(assignment.attempt))
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpu_ids)
    return env


def rlimits_for(assignment: Assignment, *, dedicated_user: bool) -> list[Rlimit]:
    """The job's resource limits, none above what the agent has itself; ``RLIMIT_AS`` last, as the launcher sets
    them in order and nothing may allocate after it."""
    wanted = assignment.resources
    cpu_s = math.ceil(assignment.timeout_s * max(1, math.ceil(wanted.cpu_cores))) + CPU_SLACK_S
    address_space = max(wanted.memory_bytes, MIN_ADDRESS_SPACE)
    limits = [
        (resource.RLIMIT_CORE, (0, 0)),  # a core dump would be the job's memory, written where nobody cleans up
        (resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES)),
        (resource.RLIMIT_CPU, (cpu_s, cpu_s + CPU_HARD_AFTER_S)),
    ]
    if dedicated_user:
        limits.append((resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES)))
    limits.append((resource.RLIMIT_AS, (address_space, address_space)))
    return [(which, _within_own_limit(which, *values)) for which, values in limits]


def _within_own_limit(which: int, soft: int, hard: int) -> tuple[int, int]:
    # Raising a hard limit takes privileges; lowering one never does.
    _, own_hard = resource.getrlimit(which)
    if own_hard != resource.RLIM_INFINITY:
        hard = min(hard, own_hard)
    return min(soft, hard), hard


def unreachable_ancestor(path: Path, user: JobUser) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` may not pass through, if any.

    Only the mode bits are read (no ACLs), with the user's primary group only, as jobs get no other.
    """
    for directory in reversed((path, *path.parents)):
        info = directory.stat()
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


class Sandbox:
    """Where and as whom jobs run; ``job()`` makes one attempt's ``SandboxedJob``."""

    def __init__(
        self,
        work_root: Path,
        *,
        user: JobUser | None,
        confinement: Confinement | None = None,
        keep_workdirs: bool = False,
        kill_grace_s: float = KILL_GRACE_S,
        cgroups: JobCgroups | None = None,
    ) -> None:
        self.work_root = work_root.absolute()
        self.user = user
        self.confinement = confinement
        self.cgroups = cgroups
        self.keep_workdirs = keep_workdirs
        self.kill_grace_s = kill_grace_s
        self.launcher = Launcher(None if cgroups is None else cgroups.root)
        self.removals = WorkdirRemover()
        self.prepared_for_s = PREPARED_FOR_S
        self._prepared: dict[JobKey, asyncio.Task[_Prepared | None]] = {}
        self._undoing: set[asyncio.Task[None]] = set()

    def prepare(self) -> None:
        """Create the work root. A job user may pass through it to its own directory, but not list it."""
        self.work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.work_root.chmod(0o711 if self.user is not None else 0o700)
        if self.user is None:
            return
        blocked = unreachable_ancestor(self.work_root, self.user)
        if blocked is not None:
            # Jobs still start in their directory (the agent enters it before dropping privileges), but every
            # absolute path into it, $HOME included, fails for them.
            log.warning(
                "%s cannot pass through %s: jobs cannot reach their HOME by its path; "
                "choose a work directory they can reach (--work-dir)",
                self.user.name,
                blocked,
            )

    def job(self, assignment: Assignment, *, gpu_ids: Sequence[int] | None = None) -> SandboxedJob:
        return SandboxedJob(self, assignment, gpu_ids)

    def prepare_job(self, assignment: Assignment, *, gpu_ids: Sequence[int] | None = None) -> None:
        """Get the attempt ready to start, running nothing, until its ``job()`` runs or it is withdrawn."""
        if assignment.key not in self._prepared:
            task = asyncio.get_running_loop().create_task(self._prepare(assignment, gpu_ids), name="job preparation")
            self._prepared[assignment.key] = task

    def withdraw_job(self, key: JobKey) -> None:
        """Undo the attempt's preparation, if any: it will not be assigned here."""
        task = self._prepared.pop(key, None)
        if task is not None:
            undoing = asyncio.get_running_loop().create_task(self._discard(task), name="job preparation withdrawn")
            self._undoing.add(undoing)
            undoing.add_done_callback(self._undoing.discard)

    async def _discard(self, task: asyncio.Task[_Prepared | None]) -> None:
        prepared = await task
        if prepared is not None:
            await prepared.discard(self.launcher)

    @property
    def prepared_jobs(self) -> int:
        return len(self._prepared)

    async def take_prepared(self, assignment: Assignment, gpu_ids: Sequence[int] | None) -> _Prepared | None:
        """The attempt's preparation, if it was prepared as it is to run."""
        task = self._prepared.pop(assignment.key, None)
        if task is None or task.cancelled():
            return None
        prepared = await asyncio.shield(task)  # a moment, if it is under way
        if prepared is None:
            return None
        prepared.expiry.cancel()
        if (prepared.assignment, prepared.gpu_ids) != (assignment, _ids(gpu_ids)):
            await prepared.discard(self.launcher)
            return None
        return prepared

    async def _prepare(self, assignment: Assignment, gpu_ids: Sequence[int] | None) -> _Prepared | None:
        try:
            workdir = self.make_workdir(assignment)
        except OSError:
            log.warning("job %s attempt %d: not prepared, no working directory", *assignment.key, exc_info=True)
            return None
        pipe = None
        try:
            pipe = await _open_output(_output_limit(assignment))
            job = await self.launcher.prepare(self.program(assignment, workdir, gpu_ids), pipe[2])
        except BaseException as exc:  # its assignment, when it comes, starts it the usual way
            if pipe is not None:
                _close_pipe(pipe)
            self.removals.remove(workdir)
            if not isinstance(exc, Exception):
                raise
            log.warning("job %s attempt %d: not prepared", *assignment.key, exc_info=True)
            return None
        expiry = asyncio.get_running_loop().call_later(self.prepared_for_s, self._expire, assignment.key)
        return _Prepared(assignment, _ids(gpu_ids), workdir, pipe, job, expiry, self.removals)

    def _expire(self, key: JobKey) -> None:
        log.info("job %s attempt %d: prepared, never assigned; undone", *key)
        self.withdraw_job(key)

    def make_workdir(self, assignment: Assignment) -> Path:
        # The job id comes from the network: only safe characters reach the file system, and never a bare "..".
        prefix = f"{_UNSAFE_IN_NAME.sub('_', assignment.job_id)[:64]}.{assignment.attempt}."
        workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_root))
        if self.user is not None:
            os.chown(workdir, self.user.uid, self.user.gid)
        return workdir

    def program(self, assignment: Assignment, workdir: Path, gpu_ids: Sequence[int] | None) -> JobProgram:
        user = self.user
        return JobProgram(
            argv=assignment.command,
            env=job_environment(assignment, workdir, gpu_ids),
            cwd=workdir,
            rlimits=rlimits_for(assignment, dedicated_user=user is not None),
            # None leaves the agent's own: only root can change them
            uid=None if user is None else user.uid,
            gid=None if user is None else user.gid,
            landlock=None if self.confinement is None else self.confinement.policy(gpu_ids),
        )

    async def remove_cgroups(self) -> None:
        """Remove the agent's cgroup directory, and kill what is left in it: once the agent is done with jobs."""
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.close)

    async def close(self) -> None:
        """Stop the launcher: whatever job still runs dies with it, and so do the prepared ones. Once this
        returns, every preparation is undone (its working directory handed to ``removals``)."""
        self.launcher.close()
        preparing, self._prepared = list(self._prepared.values()), {}
        for task in preparing:
            task.cancel()  # one under way undoes what it made; one done is undone below
        for done in await asyncio.gather(*preparing, return_exceptions=True):
            if isinstance(done, _Prepared):
                done.close()
        await asyncio.gather(*self._undoing, return_exceptions=True)


#: a job's output pipe: the read end's transport and protocol, and the write end the job gets
_Pipe = tuple[asyncio.ReadTransport, "_Output", int]


class _Prepared:
    """A prepared attempt: its working directory, its output pipe, and the launcher's spare that holds it."""

    def __init__(
        self,
        assignment: Assignment,
        gpu_ids: tuple[int, ...] | None,
        workdir: Path,
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


class WorkdirRemover:
    """Removes ended attempts' working directories (and cgroups) in a worker thread, those that wait in one go.

    ``remove`` never blocks: the directory is gone a moment later, or, if the agent stops first, once
    ``finished()`` has been awaited (the agent does, and leaves none behind).
    """

    def __init__(self) -> None:
        self._waiting: list[Path] = []
        self._cgroups: list[Path] = []
        self._removing: asyncio.Task[None] | None = None

    def remove(self, workdir: Path | None, cgroup: Path | None = None) -> None:
        if workdir is not None:
            self._waiting.append(workdir)
        if cgroup is not None:
            self._cgroups.append(cgroup)
        if self._removing is None or self._removing.done():
            self._removing = asyncio.get_running_loop().create_task(self._remove_waiting(), name="workdir removal")

    async def finished(self) -> None:
        """Until every directory handed to ``remove`` is gone (or could not be removed, and was logged)."""
        while self._removing is not None and not self._removing.done():
            await asyncio.shield(self._removing)  # the agent's own cancellation must not stop a removal half way

    async def _remove_waiting(self) -> None:
        while self._waiting or self._cgroups:
            (batch, self._waiting), (emptied, self._cgroups) = (self._waiting, []), (self._cgroups, [])
            await asyncio.to_thread(_remove_all, batch, emptied)


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
        prepared = await self._sandbox.take_prepared(self.assignment, self._gpu_ids)
        if prepared is not None:
            workdir = prepared.workdir
        else:
            try:
                workdir = self._sandbox.make_workdir(self.assignment)
            except OSError as exc:
                return Result("failed", None, 0.0, error=f"cannot create a working directory: {_describe(exc)}")
        try:
            return await self._run_in(workdir, on_started, prepared)
        finally:
            self._remove(workdir)

    async def _run_in(self, workdir: Path, on_started: Callable[[], None], prepared: _Prepared | None) -> Result:
        if self._stop.is_set():  # cancelled before it could start
            if prepared is not None:
                await prepared.release(self._sandbox.launcher)  # its directory goes with the attempt's, below
            return Result(self._stop_outcome, None, 0.0, error=self._stop_error)
        pipe = prepared.pipe if prepared is not None else await _open_output(_output_limit(self.assignment))
        output_transport, output, write_end = pipe
        self._output = output
        try:
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
                stopped_as = await self._supervise(process)
            finally:
                # What the job left running dies with it; everything does when this coroutine is cancelled.
                self._kill_all(process.pid)
            duration_s = time.monotonic() - began
            await asyncio.wait((output.closed,), timeout=OUTPUT_DRAIN_S)
            return dataclasses.replace(
                self._result(stopped_as, process.returncode, duration_s, output),
                cpu_s=None if process.usage is None else process.usage.cpu_s,
                max_rss_bytes=None if process.usage is None else process.usage.max_rss_bytes,
            )
        finally:
            output_transport.close()

    async def _spawn(self, workdir: Path, write_end: int, prepared: _Prepared | None) -> LaunchedJob:
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
        if stopped_as is not None:
            return Result(stopped_as, code, duration_s, text, truncated, self._stop_error)
        if code == 0:
            return Result("succeeded", 0, duration_s, text, truncated)
        return Result("failed", code, duration_s, text, truncated, _death(code))

    def _remove(self, workdir: Path) -> None:
        if self._sandbox.keep_workdirs:
            log.info("keeping the working directory of job %s: %s", self.assignment.job_id, workdir)
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


def _remove_all(workdirs: list[Path], cgroup_dirs: Sequence[Path] = ()) -> None:
    for cgroup in cgroup_dirs:
        cgroups.remove(cgroup)
    for workdir in workdirs:
        try:
            os.rmdir(workdir)  # most jobs leave nothing behind
        except OSError:
            _remove_tree(workdir)


def _remove_tree(path: Path) -> None:
    def report(function: object, failed: str, exc_info: object) -> None:
        # e.g. a directory the job made read-only, when the agent is not root: leave it, say so
        log.warning("cannot remove %s from a job's working directory", failed)

    shutil.rmtree(path, onerror=report)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__
