"""A cgroup for each job, as real processes in the machine's cgroup v2 hierarchy: what a job starts in a session of
its own ends with the job, however the job ends; an agent's cgroups go with it, or with the next agent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from fog_agent import cgroups
from fog_agent.cgroups import PREFIX, JobCgroups, own_cgroup
from fog_agent.job_messages import Assignment
from fog_agent.launcher import JobProgram, Launcher
from fog_agent.sandbox import Sandbox, job_users_from_env
from fog_shared.testing.processes import all_gone
from fog_shared.testing.waiting import wait_until


def _usable() -> bool:
    found = JobCgroups.found()
    if found is None:
        return False
    found.close()
    return True


needs_cgroups = pytest.mark.skipif(not _usable(), reason="no cgroup v2 hierarchy this process may write to")
#: in a session of its own, out of the job's process group, and an orphan (its parent, a subshell, is gone): neither
#: the job's process group nor its descendants hold it
ESCAPE = "(setsid sleep {} & echo $!)"


@pytest.fixture
def job_cgroups() -> Iterator[JobCgroups]:
    found = JobCgroups.found()
    assert found is not None
    yield found
    found.close()


@pytest.fixture
async def contained(tmp_path: Path, job_cgroups: JobCgroups) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), kill_grace_s=0.5, cgroups=job_cgroups)
    box.prepare()
    yield box
    await box.close()
    await box.removals.finished()


def job(*command: str, timeout_s: float = 5.0) -> Assignment:
    return Assignment("j-1", 1, command, {}, timeout_s)


def marked(marker: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or ())]


def job_cgroup(sandbox: Sandbox, output_lines: list[str]) -> Path:
    """The cgroup a job ran in, from the ``/proc/self/cgroup`` it printed: one of its own, below the agent's."""
    assert sandbox.cgroups is not None
    [v2] = [line for line in output_lines if line.startswith("0::/")]
    *_, parent, name = v2.split("/")
    assert parent == sandbox.cgroups.root.name
    return sandbox.cgroups.root / name


@needs_cgroups
async def test_what_a_job_starts_in_a_session_of_its_own_dies_with_it(contained: Sandbox) -> None:
    result = await contained.job(job("sh", "-c", ESCAPE.format("100") + "; cat /proc/self/cgroup")).run()
    assert result.outcome == "succeeded"
    escaped, *lines = result.output.split()
    await all_gone([int(escaped)])
    await contained.removals.finished()
    assert list(contained.work_root.iterdir()) == []
    assert not job_cgroup(contained, lines).exists()  # its cgroup went with it


@needs_cgroups
async def test_a_timeout_kills_what_left_the_jobs_session(contained: Sandbox) -> None:
    result = await contained.job(job("sh", "-c", ESCAPE.format("100") + "; exec sleep 100", timeout_s=1)).run()
    assert (result.outcome, result.exit_code) == ("timed_out", -15)
    await all_gone([int(result.output)])


@needs_cgroups
async def test_a_cancel_kills_what_left_the_jobs_session(contained: Sandbox) -> None:
    marker = f"100.{uuid.uuid4().int % 10**6:06d}"  # this test's processes alone
    sandboxed = contained.job(job("sh", "-c", ESCAPE.format(marker) + f"; exec sleep {marker}", timeout_s=60))
    running = asyncio.create_task(sandboxed.run())

    async def escaped() -> list[int]:
        return marked(marker) if sandboxed.pid is not None and len(marked(marker)) >= 2 else []

    pids = await wait_until(escaped, timeout=5, what="the job and the process that left its session")
    sandboxed.cancel()
    result = await asyncio.wait_for(running, timeout=10)
    assert result.outcome == "cancelled"
    await all_gone(pids)


@needs_cgroups
async def test_a_prepared_job_runs_in_its_cgroup(contained: Sandbox) -> None:
    assignment = job("sh", "-c", ESCAPE.format("100") + "; cat /proc/self/cgroup")
    contained.prepare_job(assignment)
    result = await contained.job(assignment).run()
    escaped, *lines = result.output.split()
    assert result.outcome == "succeeded"
    await all_gone([int(escaped)])
    await contained.removals.finished()
    assert not job_cgroup(contained, lines).exists()


@needs_cgroups
async def test_an_agent_leaving_takes_its_cgroups_with_it(tmp_path: Path, job_cgroups: JobCgroups) -> None:
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), cgroups=job_cgroups)
    box.prepare()
    await box.job(job("true")).run()
    await box.close()
    await box.removals.finished()
    await box.remove_cgroups()
    assert not job_cgroups.root.exists()


@needs_cgroups
@pytest.mark.parametrize("how", ["the agent closes it", "the agent is silent for its whole lease"])
async def test_the_launcher_kills_each_jobs_cgroup_when_it_kills_the_jobs(
    tmp_path: Path, job_cgroups: JobCgroups, how: str
) -> None:
    launcher = Launcher(job_cgroups.root)
    marker = f"30.{uuid.uuid4().int % 10**6:06d}"
    read_end, write_end = os.pipe()
    try:
        program = JobProgram(
            ["sh", "-c", f"setsid sleep {marker} & exec sleep {marker}"],
            {"PATH": "/usr/bin:/bin"},
            tmp_path,
            rlimits=(),
        )
        launched = await launcher.start(program, write_end)
    finally:
        os.close(write_end)
        os.close(read_end)
    try:
        await wait_until(lambda: _at_least(marker, 2), timeout=5, what="the job and what left its session")
        if how == "the agent closes it":
            launcher.close()
        else:
            launcher.keep_alive(0.2)  # and then nothing
        await asyncio.wait_for(launched.wait(), 10)
        await wait_until(lambda: _none(marker), timeout=5, what="the job and what left its session gone")
    finally:
        launcher.close()


async def _at_least(marker: str, count: int) -> bool:
    return len(marked(marker)) >= count


async def _none(marker: str) -> bool:
    return not marked(marker)


@needs_cgroups
def test_what_a_killed_agent_left_is_killed_and_removed_by_the_next_agent() -> None:
    own = own_cgroup()
    assert own is not None
    left = own / f"{PREFIX}{_a_pid_not_running()}.1"
    (left / "job").mkdir(parents=True)
    escaped = subprocess.Popen(
        ["sleep", "100"],
        preexec_fn=lambda: (left / "job" / "cgroup.procs").write_text("0"),
    )
    try:
        assert cgroups.processes(left / "job") == [escaped.pid]
        found = JobCgroups.found()
        assert found is not None
        found.close()
        assert escaped.wait(timeout=5) == -signal.SIGKILL
        assert not left.exists()
    finally:
        escaped.kill()
        escaped.wait()


def _a_pid_not_running() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


# -- finding the hierarchy --------------------------------------------------------------------------------------


def test_the_own_cgroup_is_found_below_the_v2_mount(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    (tmp_path / "self" / "cgroup").write_text("4:memory:/x\n0::/system.slice/fog-agent.service\n")
    assert own_cgroup(tmp_path) == Path("/sys/fs/cgroup/unified/system.slice/fog-agent.service")


def test_without_a_v2_hierarchy_there_is_no_own_cgroup(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    (tmp_path / "self" / "cgroup").write_text("4:memory:/x\n")
    assert own_cgroup(tmp_path) is None
    assert JobCgroups.found(proc=tmp_path) is None


@pytest.mark.parametrize("value", ["off", "0", "no"])
def test_cgroups_for_jobs_can_be_turned_off(value: str) -> None:
    assert JobCgroups.found({"FOG_AGENT_CGROUPS": value}) is None


@needs_cgroups
async def test_spares_that_end_without_a_job_leave_no_cgroup_behind(contained: Sandbox) -> None:
    assignments = [Assignment(f"j-{n}", 1, ("true",), {}, 5.0) for n in range(5)]
    for assignment in assignments:
        contained.prepare_job(assignment)

    async def five_spares_in_cgroups() -> bool:
        return len([path for path in _cgroups_below(contained) if cgroups.processes(path)]) >= 5

    await wait_until(five_spares_in_cgroups, timeout=10, what="five prepared spares, each in a cgroup of its own")
    for assignment in assignments:
        contained.withdraw_job(assignment.key)

    async def the_next_spares_alone() -> bool:
        return len(_cgroups_below(contained)) <= 1

    await wait_until(the_next_spares_alone, timeout=10, what="the withdrawn spares' cgroups removed")


def _cgroups_below(sandbox: Sandbox) -> list[Path]:
    assert sandbox.cgroups is not None
    return [path for path in sandbox.cgroups.root.iterdir() if path.is_dir()]


async def test_a_job_whose_cgroup_cannot_be_made_does_not_start(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path / "no-such-cgroup-directory")
    try:
        with pytest.raises(FileNotFoundError):
            await launcher.start(JobProgram(["true"], {"PATH": "/usr/bin:/bin"}, tmp_path, rlimits=()), 1)
    finally:
        launcher.close()


@needs_cgroups
def test_where_a_process_cannot_be_moved_into_a_cgroup_jobs_get_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory may be made where a process may not be moved (the cgroup it leaves must be writable too):
    jobs would all fail to start in a cgroup they cannot enter, so they run without one."""

    def refused(cgroup: Path) -> None:
        cgroup.mkdir()
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cgroups, "_try_a_move", refused)
    own = own_cgroup()
    assert own is not None
    before = {path.name for path in own.iterdir() if path.name.startswith(PREFIX)}
    assert JobCgroups.found() is None
    assert {path.name for path in own.iterdir() if path.name.startswith(PREFIX)} == before  # nothing left behind
