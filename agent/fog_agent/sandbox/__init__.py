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
- when the agent runs as root, an unprivileged uid of its own (``fog_agent.sandbox.users``; or one named user
  for all jobs, ``$FOG_AGENT_JOB_USER``) with no supplementary groups, which owns the working directory;
  what still runs as that uid once the job ended is killed before the uid is used again;
- no new privileges (``PR_SET_NO_NEW_PRIVS``): a set-user-id program it runs gains nothing;
- a view of the machine of its own (``private_view``, ``FOG_AGENT_PRIVATE_VIEW``; as a user that is not root, in a
  user namespace of its own, where the kernel allows them): a mount namespace where ``/proc`` lists its own processes
  alone (as root only), ``/dev/shm`` is a tmpfs of its own, and ``/tmp``
  and ``/var/tmp`` are a directory in its working directory (unless that is beneath them), and an IPC namespace
  (its System V IPC is its own, and destroyed with it);
- when it asks for ``"network": "none"`` (on a node that gives it, ``FOG_AGENT_JOB_NETWORKS``), a network namespace
  with loopback alone: it reaches nothing outside itself, not even the machine's ``localhost``;
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

This is not a container. When the agent is not root, jobs run as its own user: without a cgroup, a process
that leaves the session (``setsid``) and outlives its parent escapes the kill, and without Landlock a job reads
whatever that user may read (the agent's state file included). Memory is limited per process (address space),
not per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fog_agent.cgroups import JobCgroups
from fog_agent.job_messages import Assignment, JobKey
from fog_agent.launcher import JobProgram, Launcher
from fog_agent.sandbox.attempt import SandboxedJob, _close_pipe, _ids, _open_output, _output_limit, _Prepared
from fog_agent.sandbox.disk import DiskGuard, reserve_from_env
from fog_agent.sandbox.policy import (
    ADDRESS_SPACE_SLACK,
    JOB_READ_PATHS,
    JOB_WRITE_PATHS,
    KILL_GRACE_S,
    MAX_OPEN_FILES,
    PATH,
    PREPARED_FOR_S,
    PRIVATE_TMP,
    Confinement,
    confinement_from_env,
    job_environment,
    job_networks_from_env,
    keep_workdirs_from_env,
    private_run_possible,
    private_tmp_possible,
    private_view_from_env,
    refuse_unconfined,
    rlimits_for,
    unreachable_ancestor,
    view_for,
)
from fog_agent.sandbox.users import (
    JobUidRange,
    JobUser,
    JobUsers,
    NoJobUser,
    SandboxError,
    SharedJobUser,
    job_users_from_env,
)
from fog_agent.sandbox.workdirs import Workdir, WorkdirRemover

__all__ = [
    "ADDRESS_SPACE_SLACK",
    "JOB_READ_PATHS",
    "JOB_WRITE_PATHS",
    "MAX_OPEN_FILES",
    "PATH",
    "Confinement",
    "JobUidRange",
    "JobUser",
    "JobUsers",
    "NoJobUser",
    "Sandbox",
    "SandboxError",
    "SandboxedJob",
    "SharedJobUser",
    "Workdir",
    "WorkdirRemover",
    "confinement_from_env",
    "job_environment",
    "job_networks_from_env",
    "job_users_from_env",
    "keep_workdirs_from_env",
    "private_view_from_env",
    "refuse_unconfined",
    "rlimits_for",
    "sandbox_from_env",
    "unreachable_ancestor",
]

log = logging.getLogger(__name__)

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class Sandbox:
    """Where and as whom jobs run; ``job()`` makes one attempt's ``SandboxedJob``."""

    def __init__(
        self,
        work_root: Path,
        *,
        users: JobUsers | None,
        confinement: Confinement | None = None,
        keep_workdirs: bool = False,
        kill_grace_s: float = KILL_GRACE_S,
        cgroups: JobCgroups | None = None,
        private_view: bool = False,
        networks: Sequence[str] = ("host",),
        disk_reserve: int | None = None,
    ) -> None:
        self.work_root = work_root.absolute()
        #: stops a job that holds more disk than it stated, and the one that holds the most when less than
        #: ``disk_reserve`` bytes are free (None: no reserve)
        self.disk = DiskGuard(self.work_root, disk_reserve)
        #: the networks jobs may have here (``job_networks_from_env``); an assignment of another is refused
        self.networks = tuple(networks)
        self.users = users
        self.private_view = private_view
        self.private_tmp = private_view and private_tmp_possible(self.work_root)
        #: jobs cut off the network get an empty ``/run``: none of the Unix sockets of the machine's services
        self.private_run = private_view and private_run_possible(self.work_root)
        self.confinement = confinement
        self.cgroups = cgroups
        self.keep_workdirs = keep_workdirs
        self.kill_grace_s = kill_grace_s
        self.launcher = Launcher(None if cgroups is None else cgroups.root)
        self.removals = WorkdirRemover(users)
        self.prepared_for_s = PREPARED_FOR_S
        self._prepared: dict[JobKey, asyncio.Task[_Prepared | None]] = {}
        self._undoing: set[asyncio.Task[None]] = set()

    def prepare(self) -> None:
        """Create the work root. A job user may pass through it to its own directory, but not list it."""
        passable = 0o711 if self.users is not None else 0o700
        _make_directories(self.work_root, passable)
        self.work_root.chmod(passable)
        if self.users is None:
            return
        if isinstance(self.users, JobUidRange):
            ended = self.users.end_leftovers()
            if ended:
                log.warning("killed what still ran as job uids %s, left by an agent that died", sorted(ended))
        blocked = unreachable_ancestor(self.work_root, self.users.sample)
        if blocked is not None:
            # Jobs still start in their directory (the agent enters it before dropping privileges), but every
            # absolute path into it, $HOME included, fails for them.
            log.warning(
                "%s cannot pass through %s: jobs cannot reach their HOME by its path; "
                "choose a work directory they can reach (--work-dir)",
                self.users.sample.name,
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

    @property
    def hides_processes(self) -> bool:
        """Whether each job's ``/proc`` lists its own processes alone: a view of its own, mounted by root (a process
        that is not root may mount a ``/proc`` only for a PID namespace of its own; ``launcher_process``)."""
        return self.private_view and os.geteuid() == 0

    def refusal(self, assignment: Assignment) -> str | None:
        """Why the attempt cannot run here as it asks, if it cannot (its run then fails with that, running nothing)."""
        if assignment.network in self.networks:
            return None
        given = " or ".join(self.networks)
        return f"this node gives jobs no {assignment.network!r} network (it gives {given}; FOG_AGENT_JOB_NETWORKS)"

    async def _prepare(self, assignment: Assignment, gpu_ids: Sequence[int] | None) -> _Prepared | None:
        if self.refusal(assignment) is not None:
            return None  # its run says why
        try:
            workdir = self.make_workdir(assignment)
        except (OSError, NoJobUser):
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

    def make_workdir(self, assignment: Assignment) -> Workdir:
        """The attempt's working directory, owned by the user it takes (given back with the directory's removal)."""
        user = None if self.users is None else self.users.take()
        try:
            # The job id comes from the network: only safe characters reach the file system, never a bare "..".
            prefix = f"{_UNSAFE_IN_NAME.sub('_', assignment.job_id)[:64]}.{assignment.attempt}."
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_root))
        except BaseException:
            if self.users is not None and user is not None:
                self.users.give_back(user)
            raise
        workdir = Workdir(path, user)
        try:
            if self.private_tmp:
                (path / PRIVATE_TMP).mkdir(mode=0o700)
            if user is not None:
                for owned in (path, path / PRIVATE_TMP) if self.private_tmp else (path,):
                    os.chown(owned, user.uid, user.gid)
        except BaseException:
            self.removals.remove(workdir)
            raise
        return workdir

    def program(self, assignment: Assignment, workdir: Workdir, gpu_ids: Sequence[int] | None) -> JobProgram:
        user, confinement = workdir.user, self.confinement
        tmp = workdir.path / PRIVATE_TMP if self.private_tmp else None
        return JobProgram(
            argv=assignment.command,
            env=job_environment(assignment, workdir.path, gpu_ids),
            cwd=workdir.path,
            rlimits=rlimits_for(assignment, dedicated_user=user is not None),
            # None leaves the agent's own: only root can change them
            uid=None if user is None else user.uid,
            gid=None if user is None else user.gid,
            landlock=None if confinement is None else confinement.policy(gpu_ids, private_tmp=tmp is not None),
            view=view_for(assignment, tmp, own_run=self.private_run and assignment.network == "none")
            if self.private_view
            else None,
            isolated_network=assignment.network == "none",
        )

    async def remove_cgroups(self) -> None:
        """Remove the agent's cgroup directory, and kill what is left in it: once the agent is done with jobs."""
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.close)

    def watching_disk(self, job: SandboxedJob, directory: Path) -> contextlib.AbstractContextManager[None]:
        """While the block runs, ``job`` may be stopped for the disk (``disk``)."""
        return self.disk.watching(job, directory, job.assignment.resources.disk_bytes)

    async def close(self) -> None:
        """Stop the launcher: whatever job still runs dies with it, and so do the prepared ones. Once this
        returns, every preparation is undone (its working directory handed to ``removals``)."""
        self.launcher.close()
        await self.disk.close()
        preparing, self._prepared = list(self._prepared.values()), {}
        for task in preparing:
            task.cancel()  # one under way undoes what it made; one done is undone below
        for done in await asyncio.gather(*preparing, return_exceptions=True):
            if isinstance(done, _Prepared):
                done.close()
        await asyncio.gather(*self._undoing, return_exceptions=True)


def sandbox_from_env(work_root: Path) -> Sandbox:
    """The sandbox ``fog-agent run`` runs its jobs in, as this machine and the ``FOG_AGENT_*`` settings make it, its
    work root prepared. Raises ``SandboxError`` for settings it refuses, ``OSError`` for a work root it cannot make."""
    users, confinement = job_users_from_env(), confinement_from_env()
    refuse_unconfined(users, confinement)
    sandbox = Sandbox(
        work_root,
        users=users,
        confinement=confinement,
        keep_workdirs=keep_workdirs_from_env(),
        cgroups=JobCgroups.found(),
        private_view=private_view_from_env(),
        networks=job_networks_from_env(),
        disk_reserve=_disk_reserve(work_root),
    )
    sandbox.prepare()
    return sandbox


def _disk_reserve(work_root: Path) -> int | None:
    try:
        return reserve_from_env(work_root)
    except ValueError as exc:
        raise SandboxError(str(exc)) from None


def _make_directories(path: Path, mode: int) -> None:
    """Create ``path`` and those of its parents that are missing, each with ``mode`` itself: ``mkdir``'s mode is
    masked by the umask, and an agent started under 077 (a hardened login's) would make parents its job users
    cannot pass through. Directories that exist keep theirs: they are the owner's."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        directory.chmod(mode)
