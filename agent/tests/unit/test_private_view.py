"""A view of the machine of each job's own, as real processes (the agent is root): ``/proc`` lists the job's own
processes alone, ``/dev/shm`` is its own and bounded, ``/tmp`` is its own, and the machine's mounts are left as
they were."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fog_agent.job_messages import MIB, Assignment, Resources
from fog_agent.launcher_process import landlock_abi, private_view_works
from fog_agent.sandbox import Confinement, Sandbox, job_users_from_env, private_view_from_env
from fog_agent.sandbox.leftovers import SHARED_MEMORY
from fog_agent.sandbox.policy import PRIVATE_TMP_PATHS, private_tmp_possible
from fog_shared.testing.waiting import wait_until

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="only root may give a job a view of its own")
LANDLOCK_ABI = landlock_abi()
TMP, VAR_TMP = (Path(path) for path in PRIVATE_TMP_PATHS)


def job(*command: str, timeout_s: float = 5.0, memory_bytes: int | None = None) -> Assignment:
    resources = Resources() if memory_bytes is None else Resources(memory_bytes=memory_bytes)
    return Assignment("j-1", 1, command, {}, timeout_s, resources)


def in_the_machines_tmp(name: str) -> bool:
    return (TMP / name).exists()


def mounts() -> list[str]:
    """The machine's mount points, as this process sees them."""
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def test_jobs_get_a_view_of_their_own_as_root_unless_turned_off_or_the_machine_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert private_view_from_env({}, euid=1000, works=lambda: 0) is False  # not root: it takes mounting
    assert private_view_from_env({}, euid=0, works=lambda: 0) is True
    assert private_view_from_env({"FOG_AGENT_PRIVATE_VIEW": "off"}, euid=0, works=lambda: 0) is False
    with caplog.at_level(logging.WARNING):
        assert private_view_from_env({}, euid=0, works=lambda: errno.EPERM) is False  # a container, say
    assert "see every process of the machine" in caplog.text


@needs_root
def test_this_machine_lets_a_job_have_a_view_of_its_own() -> None:
    assert private_view_works() == 0


@needs_root
async def test_a_job_sees_its_own_processes_alone(sandbox: Sandbox) -> None:
    assert sandbox.private_view
    other = sandbox.job(job("sleep", "100", timeout_s=60))
    running = asyncio.create_task(other.run())
    try:

        async def started() -> int | None:
            return other.pid

        pid = await wait_until(started, timeout=5, what="another job")
        script = (
            f"sleep 30 & for p in 1 {os.getpid()} {pid}; do test -e /proc/$p && echo sees $p; done;"
            " test -e /proc/$$ && echo itself; test -e /proc/$! && echo its child; ps -e -o comm="
        )
        result = await sandbox.job(job("sh", "-c", script)).run()
        assert result.outcome == "succeeded", result.output
        # Not init, not the agent (here, this test), not the other job: its own, and ps lists sh, sleep and itself.
        seen = result.output.splitlines()
        assert seen[:2] == ["itself", "its child"]
        assert sorted(seen[2:]) == ["ps", "sh", "sleep"]
    finally:
        other.cancel()
        await running


@needs_root
async def test_a_jobs_shared_memory_is_its_own_and_bounded(sandbox: Sandbox) -> None:
    name = f"fog-test-{uuid.uuid4().hex}"
    script = f"echo mine > /dev/shm/{name} && cat /dev/shm/{name} && sleep 100"
    writer = sandbox.job(job("sh", "-c", script, timeout_s=60))
    running = asyncio.create_task(writer.run())
    try:

        async def written() -> bool:
            return writer.printed() == "mine\n"

        await wait_until(written, timeout=5, what="the job to write its shared memory")
        assert not (SHARED_MEMORY / name).exists()  # not in the machine's
        reader = await sandbox.job(job("sh", "-c", f"cat /dev/shm/{name} 2>/dev/null || echo none")).run()
        assert reader.output == "none\n"  # nor in another job's
    finally:
        writer.cancel()
        await running
    too_much = job("dd", "if=/dev/zero", f"of=/dev/shm/{name}", "bs=1M", "count=80", memory_bytes=64 * MIB)
    filled = await sandbox.job(too_much).run()
    assert filled.outcome == "failed"
    assert "No space left" in filled.output  # as much as its memory may hold, not the machine's RAM


def shared_memory_of_size(size: int) -> list[str]:
    """The ids of the System V shared memory segments of ``size`` bytes in this process's IPC namespace."""
    rows = (line.split() for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:])
    return [row[1] for row in rows if int(row[3]) == size]


@needs_root
async def test_a_jobs_system_v_ipc_is_neither_the_machines_nor_another_jobs(sandbox: Sandbox) -> None:
    size = 20_000 + uuid.uuid4().int % 40_000  # no other segment is likely to have it
    count = f"grep -c ' {size} ' /proc/sysvipc/shm"
    maker = sandbox.job(job("sh", "-c", f"ipcmk -M {size} >/dev/null && {count} && sleep 100", timeout_s=60))
    running = asyncio.create_task(maker.run())
    try:

        async def made() -> bool:
            return maker.printed() == "1\n"

        await wait_until(made, timeout=5, what="the job's shared memory segment")
        assert shared_memory_of_size(size) == []  # not in the machine's
        other = await sandbox.job(job("sh", "-c", count)).run()
        assert other.output == "0\n"  # nor in another job's
    finally:
        maker.cancel()
        await running
        for leaked in shared_memory_of_size(size):  # where the job had no namespace of its own: it stayed
            await (await asyncio.create_subprocess_exec("ipcrm", "-m", leaked)).wait()
    assert shared_memory_of_size(size) == []


@needs_root
async def test_the_machines_mounts_are_left_as_they_were(sandbox: Sandbox) -> None:
    before = mounts()
    sandbox.prepare_job(job("true"))
    results = await asyncio.gather(*(sandbox.job(job("true")).run() for _ in range(3)))
    assert all(result.outcome == "succeeded" for result in results)
    assert mounts() == before


# -- /tmp of its own -----------------------------------------------------------------------------------------------


@pytest.fixture(params=["unconfined", "landlock"])
async def outside_tmp(request: pytest.FixtureRequest) -> AsyncIterator[Sandbox]:
    """Jobs' directories beneath ``/run``, not ``/tmp``: each job has a ``/tmp`` of its own; with Landlock or not."""
    if not AS_ROOT:
        pytest.skip("only root may give a job a view of its own")
    confinement = None
    if request.param == "landlock":
        if not LANDLOCK_ABI:
            pytest.skip("this kernel has no Landlock")
        confinement = Confinement(LANDLOCK_ABI)
    root = Path("/run") / f"fog-test-{uuid.uuid4().hex}"
    box = Sandbox(
        root / "work", users=job_users_from_env(), confinement=confinement, private_view=True, kill_grace_s=0.5
    )
    box.prepare()
    try:
        yield box
        await box.close()
        await box.removals.finished()
    finally:
        shutil.rmtree(root)


async def test_a_job_has_a_tmp_of_its_own_in_its_directory(outside_tmp: Sandbox) -> None:
    assert outside_tmp.private_tmp
    name = f"fog-test-{uuid.uuid4().hex}"
    script = f"echo a > /tmp/{name} && echo b > /var/tmp/{name}.2 && cat /tmp/{name} && ls $HOME/tmp && sleep 100"
    writer = outside_tmp.job(job("sh", "-c", script, timeout_s=60))
    running = asyncio.create_task(writer.run())
    try:

        async def written() -> str:
            return writer.printed() if writer.printed().count("\n") == 3 else ""

        assert await wait_until(written, timeout=5, what="the job's files") == f"a\n{name}\n{name}.2\n"
        assert not in_the_machines_tmp(name)
        reader = await outside_tmp.job(job("sh", "-c", f"cat /tmp/{name} 2>/dev/null || echo none")).run()
        assert reader.output == "none\n"  # nor in another job's
    finally:
        writer.cancel()
        await running
    await outside_tmp.removals.finished()
    assert list(outside_tmp.work_root.iterdir()) == []  # gone with its directory


def test_jobs_whose_directories_are_beneath_tmp_keep_the_machines(tmp_path: Path) -> None:
    assert not private_tmp_possible(TMP / "fog" / "work")
    assert not private_tmp_possible(VAR_TMP)
    assert private_tmp_possible(Path("/var/lib/fog-agent/work"))
    assert private_tmp_possible(TMP.with_name(TMP.name + "fs") / "work")  # /tmpfs/work: not beneath /tmp
    assert not Sandbox(tmp_path / "work", users=None, private_view=True).private_tmp  # pytest's are beneath /tmp
