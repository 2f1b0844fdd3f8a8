"""Jobs kept from filling the node's disk: the job holding the most is stopped when the free space falls below the
reserve, with real jobs writing real files (on a small tmpfs of their own, as root)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fog_agent.job_messages import MIB, Assignment, Resources, Result
from fog_agent.sandbox import Sandbox, SandboxedJob, job_users_from_env
from fog_agent.sandbox.disk import choose, directory_bytes, free_bytes, over_limits, reserve_from_env
from fog_shared.testing.waiting import wait_until

#: writes a MiB to its directory every 20 ms, on and on (past a full disk too), until it is stopped
WRITER = "while :; do head -c 1048576 /dev/zero >> data 2>/dev/null; sleep 0.02; done"


def job(job_id: str, script: str, disk_bytes: int = 0) -> Assignment:
    return Assignment(job_id, 1, ("sh", "-c", script), {}, 60.0, resources=Resources(disk_bytes=disk_bytes))


def test_the_job_holding_the_most_is_chosen_only_when_the_disk_is_low_and_it_holds_enough() -> None:
    held = {"a": 10 * MIB, "b": 300 * MIB, "c": 0}
    assert choose(held, free=500 * MIB, reserve=100 * MIB) is None  # enough free
    assert choose(held, free=50 * MIB, reserve=100 * MIB) == "b"
    assert choose({"a": 10 * MIB}, free=50 * MIB, reserve=100 * MIB) is None  # low, but not for a job's doing
    assert choose({}, free=0, reserve=100 * MIB) is None


def test_a_job_beyond_what_it_stated_goes_before_one_that_holds_more_within_it() -> None:
    held = {"stated": 900 * MIB, "unstated": 200 * MIB, "small": 10 * MIB}
    stated = {"stated": 1000 * MIB}
    assert choose(held, free=50 * MIB, reserve=100 * MIB, stated=stated) == "unstated"
    assert choose(held, free=50 * MIB, reserve=100 * MIB) == "stated"  # as if none had stated anything
    # Each within what it stated (the node promised more than it had free): the one holding the most.
    within = {"a": 1000 * MIB, "b": 200 * MIB}
    assert choose({"a": 900 * MIB, "b": 100 * MIB}, free=50 * MIB, reserve=100 * MIB, stated=within) == "a"


def test_a_job_is_over_its_limit_when_it_holds_more_than_it_stated() -> None:
    held = {"over": 5 * MIB, "at": 4 * MIB, "unstated": 100 * MIB}
    assert over_limits(held, {"over": 4 * MIB, "at": 4 * MIB}) == ["over"]
    assert over_limits(held, {}) == []


def test_the_reserve_is_a_share_of_the_file_system_a_size_or_off(tmp_path: Path) -> None:
    disk = os.statvfs(tmp_path)
    five_percent = int(disk.f_blocks * disk.f_frsize * 5 / 100)
    assert reserve_from_env(tmp_path, {}) == five_percent  # the default
    assert reserve_from_env(tmp_path / "not" / "made" / "yet", {"FOG_AGENT_DISK_RESERVE": "5%"}) == five_percent
    assert reserve_from_env(tmp_path, {"FOG_AGENT_DISK_RESERVE": "2G"}) == 2 * 1024 * MIB
    assert reserve_from_env(tmp_path, {"FOG_AGENT_DISK_RESERVE": "512MiB"}) == 512 * MIB
    assert reserve_from_env(tmp_path, {"FOG_AGENT_DISK_RESERVE": "off"}) is None
    for wrong in ("lots", "150%", "-1G"):
        with pytest.raises(ValueError, match="FOG_AGENT_DISK_RESERVE"):
            reserve_from_env(tmp_path, {"FOG_AGENT_DISK_RESERVE": wrong})


def test_a_directory_takes_the_blocks_its_files_hold(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "full").write_bytes(os.urandom(MIB))
    with (tmp_path / "sparse").open("wb") as sparse:
        sparse.truncate(100 * MIB)  # 100 MiB long, holding nothing
    (tmp_path / "link").symlink_to("/usr")  # not followed
    held = directory_bytes(tmp_path)
    assert MIB <= held < 2 * MIB
    assert directory_bytes(tmp_path / "gone") == 0


async def run_until_started(job_: SandboxedJob) -> asyncio.Task[Result]:
    running = asyncio.create_task(job_.run())

    async def started() -> int | None:
        return job_.pid

    await wait_until(started, timeout=5, what=f"job {job_.assignment.job_id} to start")
    return running


async def test_when_the_disk_runs_low_the_job_holding_the_most_is_stopped(tmp_path: Path) -> None:
    # The file system's free space as the guard reads it: low once the writer holds 8 MiB.
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), kill_grace_s=0.5, disk_reserve=100 * MIB)
    box.disk.every_s, box.disk.min_blame = 0.05, 4 * MIB

    def free(_: Path) -> int:
        return 0 if directory_bytes(box.work_root) >= 8 * MIB else 1024 * MIB

    box.disk.free_of = free  # the one thing a test cannot make real without root: a small disk
    told: list[str] = []
    box.disk.tell_owner = told.append
    box.prepare()
    quiet, writer = box.job(job("quiet", "echo small > file; sleep 60")), box.job(job("writer", WRITER))
    try:
        quiet_run, writer_run = await run_until_started(quiet), await run_until_started(writer)
        stopped = await asyncio.wait_for(writer_run, timeout=20)
        assert stopped.outcome == "failed"
        assert "the node's disk ran low" in (stopped.error or "")
        [message] = told  # the node's owner hears of it (over BitChat: fog_agent.owner_messages)
        assert message.startswith("This node's disk ran low: 0 MiB free")
        assert "I stopped job writer, whose directory held" in message
        assert not quiet_run.done()  # it held next to nothing: it runs on
        quiet.cancel()
        assert (await quiet_run).outcome == "cancelled"
    finally:
        await box.close()
        await box.removals.finished()


async def test_a_disk_low_for_no_jobs_doing_is_told_to_the_owner_once_and_no_job_is_stopped(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), kill_grace_s=0.5, disk_reserve=100 * MIB)
    box.disk.every_s = 0.05
    box.disk.free_of = lambda _: 0  # filled by something else than jobs
    told: list[str] = []
    box.disk.tell_owner = told.append
    box.prepare()
    quiet = box.job(job("quiet", "echo small > file; sleep 60"))
    try:
        running = await run_until_started(quiet)

        async def heard() -> bool:
            return bool(told)

        await wait_until(heard, timeout=10, what="the owner told")
        assert told == [
            f"This node's disk is low: 0 MiB free where its jobs write ({box.work_root}), under the reserve of 100 MiB,"
            " and no job of it holds 64 MiB: something else on the machine is filling it. Jobs stopped for the disk"
            " would change nothing."
        ]
        assert not running.done()
        quiet.cancel()
        assert (await running).outcome == "cancelled"
    finally:
        await box.close()
        await box.removals.finished()


async def test_a_job_that_writes_more_than_the_disk_it_stated_is_stopped_with_no_reserve_kept(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), kill_grace_s=0.5, disk_reserve=None)
    box.disk.every_s = box.disk.limit_every_s = 0.05
    told: list[str] = []
    box.disk.tell_owner = told.append
    box.prepare()
    within = box.job(job("within", "head -c 1048576 /dev/zero > data; sleep 60", disk_bytes=8 * MIB))
    writer = box.job(job("writer", WRITER, disk_bytes=4 * MIB))
    try:
        within_run, writer_run = await run_until_started(within), await run_until_started(writer)
        stopped = await asyncio.wait_for(writer_run, timeout=20)
        assert stopped.outcome == "failed"
        assert stopped.error is not None
        assert stopped.error.startswith("its directory held ")
        assert stopped.error.endswith(" MiB, more than the 4 MiB of disk it stated (resources.disk_bytes)")
        assert not within_run.done()  # 1 MiB of the 8 it stated: it runs on
        assert told == []  # the job's owner reads why; the node's owner has nothing to do
        within.cancel()
        assert (await within_run).outcome == "cancelled"
    finally:
        await box.close()
        await box.removals.finished()


MS_NOSUID, MS_NODEV = 2, 4


@pytest.fixture
async def small_disk() -> AsyncIterator[Path]:
    """A tmpfs of 64 MiB, as a node's disk that jobs could fill."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system takes root")
    where = Path("/run") / f"fog-test-disk-{uuid.uuid4().hex}"
    where.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", str(where).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=0755") != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {os.strerror(ctypes.get_errno())}")
    try:
        yield where
    finally:
        libc.umount2(str(where).encode(), 2)  # MNT_DETACH: whatever still holds it
        where.rmdir()


async def test_a_job_filling_a_real_disk_is_stopped_and_its_space_comes_back(small_disk: Path) -> None:
    box = Sandbox(small_disk / "work", users=job_users_from_env(), kill_grace_s=0.5, disk_reserve=24 * MIB)
    box.disk.every_s, box.disk.min_blame = 0.05, 8 * MIB
    box.prepare()
    try:
        writer = box.job(job("writer", WRITER))
        result = await asyncio.wait_for(writer.run(), timeout=20)
        assert result.outcome == "failed"
        assert "the node's disk ran low" in (result.error or "")
        await box.removals.finished()
        assert free_bytes(small_disk) > 60 * MIB  # its directory went with it
    finally:
        await box.close()
        await box.removals.finished()
