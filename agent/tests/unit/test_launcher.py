"""The job launcher as real processes: jobs started side by side, what a job inherits, and who dies with whom."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from fog_agent.launcher import KILLED_WITH_LAUNCHER, JobProgram, LaunchedJob, Launcher, NotPrepared, PreparedJob
from fog_shared.testing.waiting import wait_until

PATH_ONLY = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
T = TypeVar("T")


@pytest.fixture
async def launcher() -> AsyncIterator[Launcher]:
    launcher = Launcher()
    yield launcher
    launcher.close()


async def with_output(
    ask: Callable[[JobProgram, int], Awaitable[T]], tmp_path: Path, argv: tuple[str, ...]
) -> tuple[T, asyncio.Future[bytes]]:
    """``ask`` the launcher about ``argv``, whose output is read until its last writer is gone."""
    read_end, write_end = os.pipe()
    try:
        answer = await ask(JobProgram(argv, PATH_ONLY, tmp_path, rlimits=()), write_end)
    finally:
        os.close(write_end)
    return answer, asyncio.ensure_future(asyncio.to_thread(_read_all, read_end))


async def run(launcher: Launcher, tmp_path: Path, *argv: str) -> tuple[LaunchedJob, asyncio.Future[bytes]]:
    """Start ``argv``."""
    return await with_output(launcher.start, tmp_path, argv)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


async def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def test_jobs_started_side_by_side_each_get_their_own_output_and_exit_code(
    launcher: Launcher, tmp_path: Path
) -> None:
    started = await asyncio.gather(*(run(launcher, tmp_path, "sh", "-c", f"echo {n}; exit {n}") for n in range(40)))
    codes = await asyncio.gather(*(job.wait() for job, _ in started))
    outputs = await asyncio.gather(*(output for _, output in started))
    assert codes == list(range(40))
    assert outputs == [f"{n}\n".encode() for n in range(40)]
    assert len({job.pid for job, _ in started}) == 40


async def test_a_job_inherits_none_of_the_launchers_files_and_default_signals(
    launcher: Launcher, tmp_path: Path
) -> None:
    job, output = await run(launcher, tmp_path, "sh", "-c", "ls /proc/$$/fd; yes | head -n 1")
    assert await job.wait() == 0
    # The shell has stdin, stdout and stderr alone; `yes` dies of SIGPIPE quietly, as it does anywhere.
    assert (await output).decode().split() == ["0", "1", "2", "y"]


async def test_a_command_line_as_long_as_the_api_allows_starts(launcher: Launcher, tmp_path: Path) -> None:
    args = [f"{n:04d}" + "x" * 4092 for n in range(254)]  # with sh and its script: 256 arguments, ~1 MiB
    job, output = await run(launcher, tmp_path, "sh", "-c", 'echo "$#" "${254%%x*}"', "sh", *args)
    assert await job.wait() == 0
    assert await output == b"254 0253\n"


async def test_a_program_that_cannot_start_raises_its_errno(launcher: Launcher, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run(launcher, tmp_path, "no-such-program-anywhere")
    with pytest.raises(PermissionError):
        await run(launcher, tmp_path, str(tmp_path))  # a directory is not executable
    job, _ = await run(launcher, tmp_path, "true")  # the launcher serves on
    assert await job.wait() == 0


async def test_a_killed_launcher_takes_its_jobs_and_the_next_job_gets_a_new_one(
    launcher: Launcher, tmp_path: Path
) -> None:
    job, _ = await run(launcher, tmp_path, "sleep", "30.4141")
    first = psutil.Process(job.pid).parent()
    assert first is not None
    assert first.environ() == {}, "the launcher holds nothing of the agent's environment"
    first.kill()
    assert await asyncio.wait_for(job.wait(), 10) == KILLED_WITH_LAUNCHER
    await wait_until(lambda: gone(job.pid), timeout=5, what="the job gone with its launcher")
    again, _ = await run(launcher, tmp_path, "sleep", "30.4141")
    assert psutil.Process(again.pid).ppid() != first.pid
    os.killpg(again.pid, signal.SIGTERM)
    assert await again.wait() == -signal.SIGTERM


async def test_an_idle_launcher_holds_a_spare_and_one_killed_as_it_waits_is_replaced_unreported(
    launcher: Launcher, tmp_path: Path
) -> None:
    job, _ = await run(launcher, tmp_path, "sleep", "30.4545")
    the_launcher = psutil.Process(job.pid).ppid()
    os.killpg(job.pid, signal.SIGTERM)
    assert await job.wait() == -signal.SIGTERM

    def spare_but(pid: int | None) -> Callable[[], Awaitable[list[psutil.Process]]]:
        async def probe() -> list[psutil.Process]:
            waiting = []
            for child in psutil.Process(the_launcher).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.status() != psutil.STATUS_ZOMBIE and child.pid != pid:
                        waiting.append(child)
            return waiting if len(waiting) == 1 else []

        return probe

    [spare] = await wait_until(spare_but(None), timeout=5, what="a spare forked once the launcher is idle")
    assert spare.pid != job.pid
    assert spare.environ() == {}
    spare.kill()
    # The dead one is reaped, never reported, and replaced.
    [replaced] = await wait_until(spare_but(spare.pid), timeout=5, what="another spare")
    after, output = await run(launcher, tmp_path, "echo", "still starts")
    assert (await after.wait(), await output) == (0, b"still starts\n")
    assert after.pid == replaced.pid, "the job was started by the spare"
    assert spare.pid not in launcher._running, "a spare's death is never reported as a job's"


async def prepare(launcher: Launcher, tmp_path: Path, *argv: str) -> tuple[PreparedJob, asyncio.Future[bytes]]:
    """Prepare ``argv`` (the spare holds its output as it waits)."""
    return await with_output(launcher.prepare, tmp_path, argv)


def waiting_children(launcher_pid: int) -> list[psutil.Process]:
    waiting = []
    for child in psutil.Process(launcher_pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                waiting.append(child)
    return waiting


async def test_a_prepared_job_runs_nothing_until_its_go_then_runs_once(launcher: Launcher, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    prepared, output = await prepare(launcher, tmp_path, "sh", "-c", f"echo ran >> {marker}; echo hello")
    # The spare has its directory, session and output before the go: it waits in the job's own session.
    the_launcher = await launcher_pid(launcher)

    async def in_its_session() -> list[psutil.Process]:
        return [child for child in waiting_children(the_launcher) if os.getsid(child.pid) == child.pid]

    [spare] = await wait_until(in_its_session, timeout=5, what="the prepared spare in a session of its own")
    assert spare.cwd() == str(tmp_path)
    assert not marker.exists(), "nothing runs before the go"
    job = await launcher.go(prepared)
    assert job.pid == spare.pid
    assert (await job.wait(), await output) == (0, b"hello\n")
    assert marker.read_text() == "ran\n"
    with pytest.raises(NotPrepared):  # a go is good once
        await launcher.go(prepared)


async def test_a_withdrawn_job_never_runs_and_its_spare_leaves(launcher: Launcher, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    prepared, output = await prepare(launcher, tmp_path, "sh", "-c", f"echo ran > {marker}")
    the_launcher = await launcher_pid(launcher)
    await wait_until(
        lambda: _async([c for c in waiting_children(the_launcher) if os.getsid(c.pid) == c.pid]),
        timeout=5,
        what="the prepared spare",
    )
    await launcher.withdraw(prepared)
    assert await asyncio.wait_for(output, 10) == b"", "the spare held the output, and let it go"
    await wait_until(
        lambda: _async(not [c for c in waiting_children(the_launcher) if os.getsid(c.pid) == c.pid]),
        timeout=5,
        what="the prepared spare gone",
    )
    assert not marker.exists()
    with pytest.raises(NotPrepared):
        await launcher.go(prepared)


async def test_a_prepared_job_that_cannot_start_raises_its_errno_at_its_go(launcher: Launcher, tmp_path: Path) -> None:
    prepared, _ = await prepare(launcher, tmp_path, "no-such-program-anywhere")
    with pytest.raises(FileNotFoundError):
        await launcher.go(prepared)
    gone_dir, _ = await prepare(launcher, tmp_path / "no-such-directory", "true")
    with pytest.raises(FileNotFoundError):  # its chdir failed as it prepared
        await launcher.go(gone_dir)


async def test_a_prepared_job_whose_spare_died_is_started_by_another(launcher: Launcher, tmp_path: Path) -> None:
    prepared, output = await prepare(launcher, tmp_path, "echo", "started all the same")
    the_launcher = await launcher_pid(launcher)

    async def the_prepared() -> list[psutil.Process]:
        return [child for child in waiting_children(the_launcher) if os.getsid(child.pid) == child.pid]

    [spare] = await wait_until(the_prepared, timeout=5, what="the prepared spare")
    spare.kill()
    await wait_until(lambda: gone(spare.pid), timeout=5, what="the prepared spare dead")
    job = await launcher.go(prepared)
    assert job.pid != spare.pid
    assert (await job.wait(), await output) == (0, b"started all the same\n")


async def test_a_job_prepared_by_a_launcher_since_replaced_is_not_prepared(launcher: Launcher, tmp_path: Path) -> None:
    prepared, _ = await prepare(launcher, tmp_path, "true")
    the_launcher = await launcher_pid(launcher)
    psutil.Process(the_launcher).kill()
    await wait_until(lambda: _async(launcher._process is None), timeout=5, what="the launcher's death seen")
    job, _ = await run(launcher, tmp_path, "true")  # the next job gets a new launcher
    assert await job.wait() == 0
    with pytest.raises(NotPrepared):
        await launcher.go(prepared)


async def launcher_pid(launcher: Launcher) -> int:
    async def started() -> int | None:
        return None if launcher._process is None else launcher._process.pid

    pid = await wait_until(started, timeout=5, what="the launcher")
    assert pid is not None
    return pid


async def _async(value: object) -> object:
    return value


async def test_closing_the_launcher_kills_the_jobs_it_still_runs(launcher: Launcher, tmp_path: Path) -> None:
    job, _ = await run(launcher, tmp_path, "sh", "-c", "sleep 30.4242 & sleep 30.4242")
    launcher.close()
    assert await job.wait() == KILLED_WITH_LAUNCHER
    await wait_until(lambda: _none_running("30.4242"), timeout=5, what="the job's whole group gone")


AGENT = """
import asyncio, os, sys
from pathlib import Path
from fog_agent.launcher import JobProgram, Launcher

async def main():
    launcher = Launcher()
    argv = ["sh", "-c", "sleep 30.4343 & sleep 30.4343"]
    job = await launcher.start(JobProgram(argv, {"PATH": "/bin:/usr/bin"}, Path.cwd(), ()), 2)
    print(job.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_job_and_its_children_die_with_their_agent_killed_by_sigkill(tmp_path: Path) -> None:
    agent = await asyncio.create_subprocess_exec(sys.executable, "-c", AGENT, stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        assert agent.stdout is not None
        pid = int(await asyncio.wait_for(agent.stdout.readline(), 20))
        await wait_until(lambda: _count_running("30.4343", 2), timeout=5, what="the job and a child of it")
        agent.send_signal(signal.SIGKILL)
        await wait_until(lambda: _none_running("30.4343"), timeout=5, what="the job's whole group gone")
        assert await gone(pid)
    finally:
        if agent.returncode is None:
            agent.kill()
        await agent.wait()


async def _running(marker: str) -> bool:
    return any(marker in " ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"]))


async def _none_running(marker: str) -> bool:
    return not await _running(marker)


async def _count_running(marker: str, at_least: int) -> bool:
    return sum(marker in " ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"])) >= at_least


# -- the lease: a launcher that hears nothing from its agent stops the jobs ------------------------------------------


async def test_the_jobs_of_an_agent_silent_for_its_whole_lease_are_killed_and_the_launcher_goes_on(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A stopped or frozen agent can neither heartbeat nor stop its jobs, and the platform runs them elsewhere
    once the node is declared down: its launcher, which runs on, kills them first."""
    fenced: list[float] = []
    launcher.on_fenced = fenced.append
    job, _ = await run(launcher, tmp_path, "sh", "-c", "sleep 30.4545 & sleep 30.4545")
    await wait_until(lambda: _count_running("30.4545", 2), timeout=5, what="the job and a child of it")
    launcher.keep_alive(0.5)  # and then nothing: the agent is frozen
    assert await asyncio.wait_for(job.wait(), 10) == -signal.SIGKILL
    await wait_until(lambda: _none_running("30.4545"), timeout=5, what="the job's whole group gone")
    [silent_s] = fenced
    assert silent_s >= 0.5

    again, output = await run(launcher, tmp_path, "echo", "again")  # heard again: jobs start as before
    assert (await asyncio.wait_for(again.wait(), 10), await output) == (0, b"again\n")
    assert len(fenced) == 1


async def test_an_agent_heard_within_its_lease_keeps_its_jobs(launcher: Launcher, tmp_path: Path) -> None:
    fenced: list[float] = []
    launcher.on_fenced = fenced.append
    job, _ = await run(launcher, tmp_path, "sleep", "30.4646")
    for _ in range(30):  # three seconds of a lease of two, renewed ten times a second
        launcher.keep_alive(2.0)
        await asyncio.sleep(0.1)  # the agent's renewal period, not synchronisation
    assert (job.returncode, fenced) == (None, [])
    assert await asyncio.wait_for(job.wait(), 10) == -signal.SIGKILL  # no more renewals
    assert len(fenced) == 1
