"""A view of the machine of each job's own, as real processes (the agent is root): ``/proc`` lists the job's own
processes alone, ``/dev/shm`` is its own and bounded, ``/tmp`` is its own, and the machine's mounts are left as
they were."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fog_agent.job_messages import MIB, Assignment, OutputFile, Resources
from fog_agent.launcher_process import confine, landlock_abi, prebuild, private_view, private_view_works
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


def test_jobs_get_a_view_of_their_own_unless_turned_off_or_the_machine_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert private_view_from_env({}, works=lambda: 0) is True
    assert private_view_from_env({"FOG_AGENT_PRIVATE_VIEW": "off"}, works=lambda: 0) is False
    with caplog.at_level(logging.WARNING):
        assert private_view_from_env({}, works=lambda: errno.EPERM) is False  # a container, say
    assert "they share /dev/shm, /tmp and System V IPC" in caplog.text


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


def test_an_agent_that_is_not_root_gives_a_job_its_own_shm_tmp_and_ipc_through_a_user_namespace(
    as_nobody: Callable[[Callable[[], int]], int], nobody_may: Callable[[Callable[[], int], str], None]
) -> None:
    """What a spare of an agent that is not root does for a job's view: its files in ``/dev/shm`` and ``/tmp`` and its
    System V shared memory are neither the machine's nor left behind; it stays itself, with no capability."""
    nobody_may(private_view_works, "a view of its own")
    name, size = f"fog-test-{uuid.uuid4().hex}", 20_000 + uuid.uuid4().int % 40_000
    # Not below /tmp nor /var/tmp, which the view covers (as the agent's policy requires of a work directory), nor
    # pytest's directories, root's alone. Its mode set, not left to the umask: nobody passes through, lists nothing.
    work = Path("/run") / name
    work.mkdir()
    work.chmod(0o711)
    own_tmp = work / "tmp"
    own_tmp.mkdir(mode=0o700)
    os.chown(own_tmp, NOBODY, NOBODY)

    def check() -> int:
        private_view({"shm_bytes": 1 << 20, "tmp": str(own_tmp)})
        (SHARED_MEMORY / name).write_text("mine")
        (TMP / name).write_text("mine")
        segment = ctypes.CDLL(None, use_errno=True).shmget(_IPC_PRIVATE, size, _IPC_CREAT | 0o600)
        return 2 + (segment < 0) + (os.geteuid() != NOBODY) * 2

    try:
        assert as_nobody(check) == 2, "1: failed; +1 no shared memory segment; +2 not itself"
        assert not (SHARED_MEMORY / name).exists()  # its tmpfs is gone with it
        assert not (TMP / name).exists()
        assert (own_tmp / name).read_text() == "mine"  # its /tmp was its own directory
        assert shared_memory_of_size(size) == []  # destroyed with its IPC namespace
    finally:
        for leaked in (SHARED_MEMORY / name, TMP / name):
            leaked.unlink(missing_ok=True)
        for segment in shared_memory_of_size(size):
            ctypes.CDLL(None).shmctl(int(segment), _IPC_RMID, None)
        shutil.rmtree(work)


@pytest.mark.skipif(not LANDLOCK_ABI, reason="this kernel has no Landlock")
def test_an_agent_that_is_not_root_confines_a_job_after_its_view(
    as_nobody: Callable[[Callable[[], int]], int], nobody_may: Callable[[Callable[[], int], str], None]
) -> None:
    """A spare of an agent that is not root, with the Landlock rules it made while it waited: its job writes its own
    ``/dev/shm`` and ``/tmp``, mounted after those rules were made."""
    nobody_may(private_view_works, "a view of its own")
    name = f"fog-test-{uuid.uuid4().hex}"
    work = Path("/run") / name  # as in the test above: not below /tmp, its modes set
    work.mkdir()
    work.chmod(0o711)
    own = work / "job"
    (own / "tmp").mkdir(mode=0o700, parents=True)
    for path in (own, own / "tmp"):
        os.chown(path, NOBODY, NOBODY)
    policy = Confinement(LANDLOCK_ABI).policy(private_tmp=True)

    def check() -> int:
        prebuilt = prebuild(policy)
        private_view({"shm_bytes": 1 << 20, "tmp": str(own / "tmp")})
        confine(policy, str(own), prebuilt)
        (SHARED_MEMORY / name).write_text("mine")
        (TMP / name).write_text("mine")
        return 2

    try:
        assert as_nobody(check) == 2, "1: failed (its stderr says where)"
        assert (own / "tmp" / name).read_text() == "mine"
    finally:
        shutil.rmtree(work)


NOBODY = 65534
_IPC_PRIVATE, _IPC_CREAT, _IPC_RMID = 0, 0o1000, 0


@needs_root
async def test_the_machines_mounts_are_left_as_they_were(sandbox: Sandbox) -> None:
    before = mounts()
    sandbox.prepare_job(job("true"))
    results = await asyncio.gather(*(sandbox.job(job("true")).run() for _ in range(3)))
    assert all(result.outcome == "succeeded" for result in results)
    assert mounts() == before


@contextlib.asynccontextmanager
async def viewed(work_root: Path, confinement: Confinement | None) -> AsyncIterator[Sandbox]:
    """A sandbox whose jobs get a view of their own, and ``confinement``; closed at the end, its directories gone."""
    box = Sandbox(work_root, users=job_users_from_env(), confinement=confinement, private_view=True, kill_grace_s=0.5)
    box.prepare()
    try:
        yield box
    finally:
        await box.close()
        await box.removals.finished()


# -- with Landlock -------------------------------------------------------------------------------------------------


@pytest.fixture(params=["beneath /tmp", "beneath /run"])
async def confined(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    """Landlock and a view of their own, the jobs' directories beneath ``/tmp`` (the machine's ``/tmp``: their policy
    is the launcher's) or not (a ``/tmp`` of their own: one more rule each)."""
    if not AS_ROOT or not LANDLOCK_ABI:
        pytest.skip("a view of its own and Landlock: root, on a kernel with Landlock")
    root = tmp_path if request.param == "beneath /tmp" else Path("/run") / f"fog-test-{uuid.uuid4().hex}"
    try:
        async with viewed(root / "work", Confinement(LANDLOCK_ABI)) as box:
            yield box
    finally:
        if root != tmp_path:
            shutil.rmtree(root)


async def test_a_confined_job_reads_its_proc_and_writes_its_shared_memory_and_tmp(confined: Sandbox) -> None:
    # Each is mounted anew in the job's view: a Landlock rule made for the machine's, beneath, would not apply.
    script = "head -c 5 /proc/self/status && head -c 9 /proc/meminfo && echo ' shm' > /dev/shm/f && cat /dev/shm/f"
    expected = "Name:MemTotal: shm\n"
    if confined.private_tmp:
        script, expected = script + " && echo tmp > /tmp/f && cat /tmp/f", expected + "tmp\n"
    confined.prepare_job(job("sh", "-c", script))  # a lone job is prepared while its placement commits
    for _ in range(3):  # then from spares made ahead, each with the rules it could make while it waited
        result = await confined.job(job("sh", "-c", script)).run()
        assert (result.outcome, result.output) == ("succeeded", expected)


async def test_a_confined_job_reads_its_files_and_gives_its_outputs_back(confined: Sandbox) -> None:
    assignment = Assignment("j-1", 1, ("sh", "-c", "tr a-z A-Z < in/words > out"), timeout_s=5,
                            files={"in/words": b"fog\n"}, outputs=("out",))  # fmt: skip
    confined.prepare_job(assignment)
    for _ in range(2):  # prepared, then from a spare made ahead
        result = await confined.job(assignment).run()
        assert (result.outcome, result.files) == ("succeeded", (OutputFile("out", b"FOG\n", 4),)), result.error


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
    try:
        async with viewed(root / "work", confinement) as box:
            yield box
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
