"""What a job gets, and as whom it runs: its user, environment, limits and view of the file system."""

from __future__ import annotations

import functools
import logging
import math
import os
import resource
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from fog_agent.job_messages import MIB, Assignment, Network
from fog_agent.launcher_process import RUN, isolated_network_works, landlock_abi, private_view_works
from fog_agent.sandbox.users import JobUser, JobUsers, SandboxError

log = logging.getLogger(__name__)

PATH = "/usr/local/bin:/usr/bin:/bin"
#: the least memory a job gets, whatever it asked for: with less, a shell or Python cannot even start
MIN_MEMORY = 64 * MIB
#: how much more address space than memory a job gets. Its memory is capped by ``RLIMIT_DATA`` (what it may write:
#: its heap, thread stacks, private mappings), which address space reserved and never written does not count; runtimes
#: reserve gigabytes of it up front (Java's heap and class space, Node.js's code range), and with the address space
#: capped at the job's memory they would not start. The address space stays capped too: memory a job maps shared
#: (``MAP_SHARED`` anonymous), which ``RLIMIT_DATA`` does not count, is bounded by it.
ADDRESS_SPACE_SLACK = 4 * 1024 * MIB
MAX_OPEN_FILES = 1024
#: RLIMIT_NPROC counts every process (thread, even) of the *user*, not of the job. With a uid of the job's own it
#: caps that job, which is what stops a fork bomb; with one named user for all jobs, the node's jobs together.
#: Jobs that run as the agent's own user (the agent is not root) get none: the user's other processes would count
#: against it, and fail the job at random.
MAX_PROCESSES = 256
#: RLIMIT_CPU is a backstop for when the agent is no longer there to enforce the timeout (it crashed). It allows
#: what the job's cores can burn in its timeout and a little more, so that the wall-clock timeout comes first.
CPU_SLACK_S = 1
#: between the soft CPU limit (SIGXCPU, which a process may catch) and the hard one (SIGKILL)
CPU_HARD_AFTER_S = 5
#: how long a job may take to end after SIGTERM before it gets SIGKILL
KILL_GRACE_S = 2.0
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
#: what a job with a view of its own has of its own, in its working directory (``view_for``)
PRIVATE_TMP_PATHS = ("/tmp", "/var/tmp")  # noqa: S108
#: that directory, in the working directory
PRIVATE_TMP = "tmp"


def refuse_unconfined(
    users: JobUsers | None, confinement: Confinement | None, environ: Mapping[str, str] = os.environ
) -> None:
    """Raise unless jobs are kept from the agent's files, or the owner allows them not to be.

    Jobs of an agent that is not root run as its own user; without Landlock, nothing then keeps them from reading
    its state file. With the node's credential, another user's job could connect as the node, be handed the next
    jobs placed on it (their environments, their data) and report made-up results. So that takes
    ``FOG_AGENT_ALLOW_UNCONFINED_JOBS=yes``: a machine whose only jobs are its owner's (``fogctl dev up``).
    """
    if users is None and confinement is None and not _yes(environ.get("FOG_AGENT_ALLOW_UNCONFINED_JOBS", "")):
        raise SandboxError(
            "jobs would run as this user with nothing to keep them from the node's credential (no Landlock: a "
            "kernel before 5.13, without it in lsm=, or FOG_AGENT_LANDLOCK=off); run the agent as root (jobs then "
            "run as uids of their own) or with Landlock, or set FOG_AGENT_ALLOW_UNCONFINED_JOBS=yes if only your "
            "own jobs run here"
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

    def policy(self, gpu_ids: Sequence[int] | None = None, *, private_tmp: bool = False) -> dict[str, object]:
        """As the launcher takes it; a job may change its working directory too, the device files of the GPUs it
        was given, and ``/tmp`` and ``/var/tmp`` where they are its own (``private_view``)."""
        also = (*(PRIVATE_TMP_PATHS if private_tmp else ()), *_gpu_devices(gpu_ids))
        if not also:
            return self._policy
        return {**self._policy, "write": [*self._policy["write"], *_effective(also)]}

    @functools.cached_property
    def _policy(self) -> dict[str, Any]:
        # Each rule costs every job's start a little: only paths that are there, each once (/bin is /usr/bin).
        return {"abi": self.abi, "read": _effective(self.read), "write": _effective(self.write)}


def _gpu_devices(gpu_ids: Sequence[int] | None) -> tuple[str, ...]:
    if not gpu_ids:
        return ()
    return (*NVIDIA_CONTROL_DEVICES, *(NVIDIA_GPU_DEVICE.format(gpu) for gpu in gpu_ids))


def _effective(paths: Iterable[str]) -> list[str]:
    """The paths that exist, as they really are, less those beneath another (it covers them)."""
    real = list(dict.fromkeys(os.path.realpath(path) for path in paths if os.path.exists(path)))
    return [path for path in real if not any(path.startswith(other.rstrip("/") + "/") for other in real)]


def private_view_from_env(
    environ: Mapping[str, str] = os.environ, *, works: Callable[[], int] = private_view_works
) -> bool:
    """Whether jobs get a view of the machine of their own (``launcher_process.private_view``), unless
    ``FOG_AGENT_PRIVATE_VIEW`` is off: where this machine lets the agent unshare mounts (``works``: as root, or as
    a user allowed to make user namespaces; only root's jobs see their own processes alone)."""
    if not _yes(environ.get("FOG_AGENT_PRIVATE_VIEW", "on")):
        return False
    failed = works()
    if failed:
        log.warning(
            "jobs get no view of their own (%s: cannot unshare mounts: a container without CAP_SYS_ADMIN, or a user "
            "the kernel allows no user namespace?): they share /dev/shm, /tmp and System V IPC%s",
            os.strerror(failed),
            ", and see every process of the machine" if os.geteuid() == 0 else "",
        )
    return not failed


#: the networks a job may ask for (``job_messages.Network``): the node's own, or none but loopback
JOB_NETWORKS: tuple[str, ...] = get_args(Network)


def job_networks_from_env(
    environ: Mapping[str, str] = os.environ, *, works: Callable[[], int] = isolated_network_works
) -> tuple[str, ...]:
    """The networks this node gives its jobs, as ``FOG_AGENT_JOB_NETWORKS`` names them (``host,none`` unless set):
    ``none`` where a job can have a network of its own (``works``: root, or a user allowed to make user namespaces).

    Set to ``none``, every job here has no network but loopback: jobs that need the node's are placed elsewhere.
    Unset, ``none`` is left out where it cannot be given (the agent says so); named and impossible, it is refused.
    """
    value = environ.get("FOG_AGENT_JOB_NETWORKS") or None
    named = tuple(dict.fromkeys(part.strip().lower() for part in (value or "host,none").split(",") if part.strip()))
    unknown = [name for name in named if name not in JOB_NETWORKS]
    if unknown or not named:
        raise SandboxError(
            f"FOG_AGENT_JOB_NETWORKS={value!r}: name one or both of {', '.join(JOB_NETWORKS)}, separated by commas"
        )
    failed = works() if "none" in named else 0
    if not failed:
        return named
    why = (
        "a network of their own takes root, or a kernel that lets this user make user namespaces "
        f"({os.strerror(failed)})"
    )
    if value is not None:
        raise SandboxError(f"FOG_AGENT_JOB_NETWORKS names none, but jobs cannot be cut off the network here: {why}")
    log.info("jobs here get the node's network alone, none asked for: %s", why)
    return tuple(name for name in named if name != "none")


def view_for(assignment: Assignment, tmp: Path | None, *, own_run: bool = False) -> dict[str, Any]:
    """The job's view, as the launcher takes it: its ``/dev/shm`` holds as much as its memory may; ``tmp``, if any,
    is its ``/tmp`` and ``/var/tmp``; with ``own_run``, its ``/run`` is empty."""
    view: dict[str, Any] = {"shm_bytes": max(assignment.resources.memory_bytes, MIN_MEMORY)}
    if tmp is not None:
        view["tmp"] = str(tmp)
    if own_run:
        view["run"] = True
    return view


def private_run_possible(work_root: Path) -> bool:
    """Whether jobs cut off the network may have an empty ``/run``: not when their directories are beneath it."""
    real, run = os.path.realpath(work_root), os.path.realpath(RUN)
    return not (real == run or real.startswith(run.rstrip("/") + "/"))


def private_tmp_possible(work_root: Path) -> bool:
    """Whether jobs may have a ``/tmp`` of their own: not when their directories are beneath ``/tmp`` or ``/var/tmp``
    (their ``HOME``, by its path, would lead into their own ``/tmp``, where it is not)."""
    real = os.path.realpath(work_root)
    tmps = (os.path.realpath(path) for path in PRIVATE_TMP_PATHS)
    return not any(real == tmp or real.startswith(tmp.rstrip("/") + "/") for tmp in tmps)


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
    """The job's resource limits, none above what the agent has itself; its memory and address space last, as the
    launcher sets them in order and nothing may allocate after them."""
    wanted = assignment.resources
    cpu_s = math.ceil(assignment.timeout_s * max(1, math.ceil(wanted.cpu_cores))) + CPU_SLACK_S
    memory = max(wanted.memory_bytes, MIN_MEMORY)
    limits = [
        (resource.RLIMIT_CORE, (0, 0)),  # a core dump would be the job's memory, written where nobody cleans up
        (resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES)),
        (resource.RLIMIT_CPU, (cpu_s, cpu_s + CPU_HARD_AFTER_S)),
    ]
    if dedicated_user:
        limits.append((resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES)))
    limits.append((resource.RLIMIT_DATA, (memory, memory)))
    limits.append((resource.RLIMIT_AS, (memory + ADDRESS_SPACE_SLACK, memory + ADDRESS_SPACE_SLACK)))
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
