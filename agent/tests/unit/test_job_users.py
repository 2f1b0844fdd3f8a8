"""As whom jobs run when the agent is root: a uid of each job's own, taken from a range and given back once nothing
of the job is left under it; the range's checks; and, as real processes, what that keeps jobs from doing to each
other, even without Landlock or a cgroup."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fog_agent.job_messages import Assignment
from fog_agent.sandbox import JobUidRange, NoJobUser, Sandbox, SandboxError, SharedJobUser, job_users_from_env
from fog_agent.sandbox.users import DEFAULT_JOB_UIDS, MIN_JOB_UIDS, check_uid_range
from fog_agent.sandbox.workdirs import SHARED_MEMORY
from fog_shared.testing.processes import all_gone
from fog_shared.testing.waiting import wait_until

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="only root runs jobs as other users")
FIRST = DEFAULT_JOB_UIDS[0]
#: in a session of its own and an orphan: neither the job's process group nor its descendants hold it
ESCAPE = "(setsid sleep {} & echo $!)"


# -- the range --------------------------------------------------------------------------------------------------


def test_a_uid_held_by_a_job_is_never_taken_by_another(tmp_path: Path) -> None:
    users = JobUidRange(FIRST, FIRST + 3, locks=tmp_path, start=2)
    taken = [users.take() for _ in range(4)]
    assert [user.uid for user in taken] == [FIRST + 2, FIRST + 3, FIRST, FIRST + 1]  # in turn, from the start
    assert all(user.own and user.gid == user.uid for user in taken)
    with pytest.raises(NoJobUser, match="all 4 job uids"):
        users.take()
    users.give_back(taken[1])
    assert users.take().uid == FIRST + 3  # the only one free
    users.give_back(taken[0])
    users.give_back(taken[2])
    assert [users.take().uid, users.take().uid] == [FIRST, FIRST + 2]  # skipping the held FIRST + 1


def test_a_uid_given_back_is_used_again_as_late_as_can_be(tmp_path: Path) -> None:
    users = JobUidRange(FIRST, FIRST + 9, locks=tmp_path, start=0)
    first = users.take()
    users.give_back(first)
    seen = [users.take().uid for _ in range(9)]
    assert first.uid not in seen  # the other nine first
    assert users.take().uid == first.uid


def test_agents_of_one_machine_share_the_range_and_never_hold_one_uid_at_once(tmp_path: Path) -> None:
    one, other = (JobUidRange(FIRST, FIRST + 3, locks=tmp_path, start=0) for _ in range(2))
    mine = one.take()
    assert other.take().uid == FIRST + 1  # the first was the other agent's
    one.give_back(mine)
    assert not (tmp_path / str(mine.uid)).exists()  # its lock file goes with it
    other._next = 0
    assert other.take().uid == FIRST  # free again


def test_a_uid_held_by_an_agent_that_died_is_free(tmp_path: Path) -> None:
    held_then_died = (
        "import sys; from pathlib import Path; from fog_agent.sandbox import JobUidRange;"
        f" print(JobUidRange({FIRST}, {FIRST + 3}, locks=Path(sys.argv[1]), start=0).take().uid)"
    )
    died = subprocess.run([sys.executable, "-c", held_then_died, str(tmp_path)], capture_output=True, check=True)
    assert int(died.stdout) == FIRST
    assert (tmp_path / str(FIRST)).exists()  # it never gave it back
    assert JobUidRange(FIRST, FIRST + 3, locks=tmp_path, start=0).take().uid == FIRST


def test_as_root_jobs_get_uids_of_their_own_unless_one_user_is_named() -> None:
    assert job_users_from_env({}, euid=1000) is None  # not root: jobs run as the agent's own user
    default = job_users_from_env({}, euid=0)
    assert isinstance(default, JobUidRange)
    assert (default.first, default.last) == DEFAULT_JOB_UIDS
    told = job_users_from_env({"FOG_AGENT_JOB_UIDS": f"{FIRST} - {FIRST + 4095}"}, euid=0)
    assert isinstance(told, JobUidRange)
    assert (told.first, told.last) == (FIRST, FIRST + 4095)
    named = job_users_from_env({"FOG_AGENT_JOB_USER": "nobody"}, euid=0)
    assert isinstance(named, SharedJobUser)
    assert named.take() == named.take()  # the same for every job
    assert not named.take().own  # never killed by its uid: other jobs, other programs run as it


@pytest.mark.parametrize(
    ("environ", "why"),
    [
        ({"FOG_AGENT_JOB_USER": "nobody", "FOG_AGENT_JOB_UIDS": "2000000-2065535"}, "not both"),
        ({"FOG_AGENT_JOB_UIDS": "2000000"}, "expected FIRST-LAST"),
        ({"FOG_AGENT_JOB_UIDS": "a-b"}, "expected FIRST-LAST"),
        ({"FOG_AGENT_JOB_UIDS": "0-65535"}, "other than root's"),
        ({"FOG_AGENT_JOB_UIDS": "2000000-1999999"}, "other than root's"),
        ({"FOG_AGENT_JOB_UIDS": "2000000-2000009"}, f"fewer than the {MIN_JOB_UIDS}"),
        ({"FOG_AGENT_JOB_USER": "fog-no-such-user"}, "does not exist"),
        ({"FOG_AGENT_JOB_USER": "root"}, "never run as root"),
    ],
)
def test_a_range_or_user_jobs_cannot_safely_run_as_is_refused(environ: dict[str, str], why: str) -> None:
    with pytest.raises(SandboxError, match=why):
        job_users_from_env(environ, euid=0)


WHOLE = "0 0 4294967295\n"  # no user namespace: every id
IN_A_CONTAINER = "0 100000 65536\n"  # a user namespace of 65,536 ids


def check(
    first: int,
    last: int,
    *,
    accounts: tuple[tuple[str, int], ...] = (("alice", 1000),),
    groups: tuple[tuple[str, int], ...] = (("docker", 998),),
    uid_map: str = WHOLE,
    gid_map: str = WHOLE,
) -> None:
    check_uid_range(first, last, accounts=accounts, groups=groups, uid_map=uid_map, gid_map=gid_map)


def test_a_range_that_holds_an_account_a_group_or_unmapped_ids_is_refused() -> None:
    check(FIRST, FIRST + 65535)
    with pytest.raises(SandboxError, match="65534 is the user nobody's"):
        check(60000, 70000, accounts=(("nobody", 65534),))
    with pytest.raises(SandboxError, match="61000 is the group render's"):  # its gid would be the group's
        check(60000, 70000, groups=(("render", 61000),))
    with pytest.raises(SandboxError, match="uid_map"):
        check(FIRST, FIRST + 65535, uid_map=IN_A_CONTAINER)
    with pytest.raises(SandboxError, match="gid_map"):
        check(FIRST, FIRST + 65535, gid_map=IN_A_CONTAINER)
    check(1001, 60000, uid_map=IN_A_CONTAINER, gid_map=IN_A_CONTAINER)


# -- jobs, as real processes ------------------------------------------------------------------------------------


def job(*command: str, job_id: str = "j-1", timeout_s: float = 5.0) -> Assignment:
    return Assignment(job_id, 1, command, {"SECRET": "of " + job_id}, timeout_s)


@pytest.fixture
async def machine_view(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """Neither Landlock, nor a cgroup, nor a view of their own: their uids alone keep jobs apart."""
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), kill_grace_s=0.5)
    box.prepare()
    yield box
    await box.close()
    await box.removals.finished()


@needs_root
def test_the_directories_the_agent_makes_for_jobs_let_their_users_through_whatever_its_umask(tmp_path: Path) -> None:
    """An agent started under umask 077 makes its work directory's missing parents passable by job users (0711), not
    0700: else no job could reach its HOME by its path. A parent that was there keeps its mode."""
    tmp_path.chmod(0o750)
    mask = os.umask(0o077)
    try:
        Sandbox(tmp_path / "fog" / "agent" / "work", users=job_users_from_env()).prepare()  # starts no process
        Sandbox(tmp_path / "alone" / "work", users=None).prepare()
    finally:
        os.umask(mask)
    modes = {path.relative_to(tmp_path).as_posix(): path.stat().st_mode & 0o777 for path in tmp_path.rglob("*")}
    assert modes == {"fog": 0o711, "fog/agent": 0o711, "fog/agent/work": 0o711, "alone": 0o700, "alone/work": 0o700}
    assert tmp_path.stat().st_mode & 0o777 == 0o750


@needs_root
async def test_a_job_cannot_reach_another_jobs_processes_or_files(machine_view: Sandbox) -> None:
    sandbox = machine_view
    target = sandbox.job(job("sh", "-c", "echo mine > file; id -u; pwd; exec sleep 100", job_id="a", timeout_s=60))
    running = asyncio.create_task(target.run())
    try:

        async def started() -> list[str] | None:
            lines = target.printed().split()
            return lines if len(lines) == 2 else None

        uid, workdir = await wait_until(started, timeout=5, what="the first job to run")
        pid = target.pid
        reach = (
            f"id -u; awk '/Max processes/ {{print $3}}' /proc/self/limits;"
            f" head -c 1 /proc/{pid}/environ > /dev/null 2>&1 && echo read || echo not read;"
            f" kill -0 {pid} 2>/dev/null && echo signalled || echo refused;"
            f" cat {workdir}/file 2>/dev/null || echo no file"
        )
        other = await sandbox.job(job("sh", "-c", reach, job_id="b")).run()
        own_uid, processes, *told = other.output.splitlines()
        assert own_uid != uid
        assert int(processes) == 256  # RLIMIT_NPROC counts its uid's processes: this job's alone
        assert told == ["not read", "refused", "no file"]
    finally:
        target.cancel()
        await running


@needs_root
async def test_a_jobs_uid_is_given_back_once_it_ended_and_nothing_of_it_is_left(machine_view: Sandbox) -> None:
    users = machine_view.users
    assert isinstance(users, JobUidRange)
    left = SHARED_MEMORY / f"fog-test-{uuid.uuid4().hex}"
    result = await machine_view.job(job("sh", "-c", ESCAPE.format("100") + f"; echo x > {left}; id -u")).run()
    assert result.outcome == "succeeded", result.output
    escaped, uid = result.output.split()
    assert left.exists()  # in the machine's /dev/shm
    await machine_view.removals.finished()
    # No cgroup: the process that left the job's session outlived the job, and was found by its uid.
    await all_gone([int(escaped)])
    assert not left.exists()  # its shared memory, too
    assert users.held == 0
    assert list(machine_view.work_root.iterdir()) == []
    assert (await machine_view.job(job("id", "-u")).run()).output.strip() != uid  # the next job got another


@needs_root
async def test_a_kept_working_directorys_uid_is_never_given_to_another_job(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), keep_workdirs=True)
    box.prepare()
    try:
        result = await box.job(job("true")).run()
        await box.removals.finished()
    finally:
        await box.close()
    assert result.outcome == "succeeded"
    assert isinstance(box.users, JobUidRange)
    assert box.users.held == 1


async def test_a_set_user_id_program_gains_nothing_in_a_job(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("grep", "NoNewPrivs", "/proc/self/status")).run()
    assert result.output.split() == ["NoNewPrivs:", "1"]


@needs_root
def test_an_agent_at_start_kills_what_runs_as_job_uids_no_agent_holds(tmp_path: Path) -> None:
    starting, alive_agent = (JobUidRange(FIRST, FIRST + 1023, locks=tmp_path, start=0) for _ in range(2))
    held = alive_agent.take()  # FIRST: a job of an agent that runs
    left, running = (
        subprocess.Popen(["sleep", "100"], user=uid, group=uid, start_new_session=True)
        for uid in (FIRST + 7, held.uid)  # FIRST + 7: a job of an agent that died
    )
    try:
        assert starting.end_leftovers() == {FIRST + 7}
        assert left.wait(timeout=5) == -signal.SIGKILL
        assert running.poll() is None  # the running agent's job is left alone
        assert starting.held == 0
    finally:
        for process in (left, running):
            process.kill()
            process.wait()
