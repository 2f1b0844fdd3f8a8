"""``fog-agent run``: keep this node connected to its gateway and run the jobs it assigns, until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from fog_agent.cli import StateDirOption, fail
from fog_agent.connection import DRAIN_TIMEOUT_S, AgentConnection
from fog_agent.declaration import Declaration
from fog_agent.fingerprint import cpu_cores, detect_gpus
from fog_agent.job_messages import MIB
from fog_agent.jobs import Capacity, JobRunner
from fog_agent.owner_messages import OwnerMessages
from fog_agent.sandbox import SandboxError, sandbox_from_env
from fog_agent.state import NodeState, StateError, state_path
from fog_agent.usage import usage_of

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

WorkDirOption = Annotated[
    Path | None,
    typer.Option(
        "--work-dir",
        envvar="FOG_AGENT_WORK_DIR",
        help="Where jobs get their working directories (default: <state dir>/work). When the agent runs as root, "
        "the job user must be able to pass through every directory above it.",
        show_default=False,
    ),
]
DrainTimeoutOption = Annotated[
    float,
    typer.Option(
        "--drain-timeout", min=0, help="On SIGTERM/SIGINT, how long running jobs may go on before they are killed (s)"
    ),
]


def run(
    state_dir: StateDirOption = None,
    work_dir: WorkDirOption = None,
    drain_timeout: DrainTimeoutOption = DRAIN_TIMEOUT_S,
) -> None:
    """Connect to the gateway, heartbeat and run jobs until SIGTERM or SIGINT (exit 0) or a refusal (exit 3).

    A signal drains: no new jobs, running ones may finish (--drain-timeout), then goodbye. A second one kills
    the running jobs at once.
    """
    state = joined_state(state_dir)
    path = state.path
    owner = OwnerMessages(state.gateway_url, state.credential)
    work_root = work_dir or default_work_root(path.parent, state.node_id)
    jobs = _job_runner(work_root, owner=owner)
    declaration = Declaration(state, work_root, jobs.networks, tell=owner.tell)
    try:
        connection = AgentConnection(
            state.gateway_url,
            state.node_id,
            state.credential,
            usage=usage_of(path.parent),
            jobs=jobs,
            drain_timeout_s=drain_timeout,
        )
    except ValueError as exc:
        raise typer.Exit(fail(f"{path}: {exc}")) from None
    log.info("node %s (%s) starting", state.node_id, state.name)
    status = asyncio.run(serve(connection, jobs, owner, declaration))
    if work_dir is None:  # the agent made it: an agent that is gone for good leaves nothing behind
        remove_empty(work_root, up_to=SYSTEM_WORK_ROOT if work_root.is_relative_to(SYSTEM_WORK_ROOT) else path.parent)
    if status:
        raise typer.Exit(status)  # the connection has logged why


#: where a root agent's jobs get their directories, unless ``--work-dir`` says otherwise
SYSTEM_WORK_ROOT = Path("/var/lib/fog-agent")


def default_work_root(state_dir: Path, node_id: str, *, euid: int | None = None) -> Path:
    """Beside the node's state, for an agent whose jobs run as itself; as root, whose jobs run as users of their
    own, ``/var/lib/fog-agent/<node id>/work``: a job's user must pass through every directory on the way to its
    own, or whatever opens it by path fails (``python3 script.py``, ``$HOME``), and the state directory, where the
    credential is, is root's alone (as root's home is)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return state_dir / "work"
    return SYSTEM_WORK_ROOT / node_id / "work"


def remove_empty(directory: Path, *, up_to: Path) -> None:
    """Remove ``directory`` and then each parent below ``up_to``, as long as they are empty (the next start makes
    them again)."""
    while directory != up_to and directory.is_relative_to(up_to):
        try:
            directory.rmdir()
        except OSError:  # not empty (a job's directory still being removed, a file of the owner's): left as it is
            return
        directory = directory.parent


def _job_runner(work_root: Path, *, owner: OwnerMessages | None = None) -> JobRunner:
    try:
        sandbox = sandbox_from_env(work_root)
    except SandboxError as exc:
        raise typer.Exit(fail(f"cannot run jobs: {exc}")) from None
    except OSError as exc:
        raise typer.Exit(fail(f"cannot prepare the work directory {work_root}: {exc.strerror or exc}")) from None
    # Measured now, not at join: what this process may use today is what its jobs share.
    capacity = Capacity(cpu_cores=cpu_cores(), gpus=len(detect_gpus()))
    runs_as = sandbox.users.describe() if sandbox.users is not None else "the agent's own user"
    log.info("jobs share %g core(s) and %d GPU(s) and run as %s", capacity.cpu_cores, capacity.gpus, runs_as)
    if sandbox.confinement is not None:
        log.info("jobs are confined by Landlock (ABI %d): they change their directory alone", sandbox.confinement.abi)
    else:
        log.warning(
            "jobs are not confined by Landlock (off, or not in this kernel): they read whatever %s may", runs_as
        )
    if sandbox.private_view:
        sees = "sees its own processes alone in /proc, and " if sandbox.hides_processes else ""
        log.info("each job %shas a /dev/shm, a /tmp and System V IPC of its own", sees)
    if "none" in sandbox.networks:
        log.info("jobs may have a network of their own, loopback alone; jobs get %s", " or ".join(sandbox.networks))
    if sandbox.cgroups is not None:
        log.info("each job gets a cgroup below %s: whatever it starts ends with it", sandbox.cgroups.root)
    if sandbox.disk.reserve is not None:
        log.info("the job holding the most of the disk is stopped when %s has less than %d MiB free",
                 sandbox.work_root, sandbox.disk.reserve // MIB)  # fmt: skip
    else:
        log.warning("FOG_AGENT_DISK_RESERVE is off: a job that states no disk may fill the disk of %s",
                    sandbox.work_root)  # fmt: skip
    sandbox.disk.tell_owner = None if owner is None else owner.tell  # over BitChat, as it happens
    return JobRunner(sandbox, capacity)


def joined_state(state_dir: Path | None) -> NodeState:
    """The node this machine joined as; else the command exits 1, saying why."""
    path = state_path(state_dir)
    try:
        state = NodeState.load(path)
    except StateError as exc:
        raise typer.Exit(fail(f"{exc}; `fog-agent join --force` replaces it")) from None
    if state is None:
        raise typer.Exit(fail(f"not joined yet (no {path}); run `fog-agent join` first"))
    return state


async def serve(
    connection: AgentConnection,
    jobs: JobRunner,
    owner: OwnerMessages | None = None,
    declaration: Declaration | None = None,
) -> int:
    """Run the connection with SIGTERM and SIGINT turned into its ``stop()``, while what the machine offers is
    declared beside it; no job outlives it, and what waits to be told to the owner has a few seconds to go."""
    loop = asyncio.get_running_loop()
    told = 0
    if owner is not None:
        owner.start()  # what was told before the loop ran
    declaring = None if declaration is None else loop.create_task(declaration.run(), name="declaration")

    def stop(signum: signal.Signals) -> None:
        nonlocal told
        told += 1
        if told == 1:
            log.info("%s: draining and leaving", signum.name)
        else:
            log.warning("%s again: killing the running jobs", signum.name)
        connection.stop()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await connection.run()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if declaring is not None:
            declaring.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # its failure is no reason to fail the exit
                await declaring
        await jobs.close()  # after a refusal, say: the jobs' processes would run on, unwatched
        if owner is not None:
            await owner.close()
