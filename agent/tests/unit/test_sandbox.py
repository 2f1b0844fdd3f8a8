"""One job as a real sandboxed subprocess: outcomes, output, environment, limits, user, and killing the whole tree."""

from __future__ import annotations

import asyncio
import math
import os
import pwd
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fog_agent.job_messages import MIB, Assignment, Resources
from fog_agent.launcher_process import landlock_abi
from fog_agent.sandbox import (
    ADDRESS_SPACE_SLACK,
    JOB_READ_PATHS,
    JOB_WRITE_PATHS,
    MAX_OPEN_FILES,
    PATH,
    Confinement,
    JobUidRange,
    JobUser,
    Sandbox,
    SandboxError,
    SharedJobUser,
    confinement_from_env,
    job_users_from_env,
    keep_workdirs_from_env,
    refuse_unconfined,
    unreachable_ancestor,
)
from fog_agent.sandbox import policy as policy_module
from fog_agent.sandbox import workdirs as workdirs_module
from fog_agent.sandbox.users import DEFAULT_JOB_UIDS
from fog_shared.testing.processes import all_gone
from fog_shared.testing.waiting import wait_until

AS_ROOT = os.geteuid() == 0
LANDLOCK_ABI = landlock_abi()
needs_landlock = pytest.mark.skipif(LANDLOCK_ABI == 0, reason="this kernel has no Landlock")


def job(
    *command: str, timeout_s: float = 5.0, resources: Resources | None = None, output_limit_bytes: int = MIB
) -> Assignment:
    return Assignment("j-1", 1, command, {}, timeout_s, resources or Resources(), output_limit_bytes)


async def test_a_job_that_exits_0_succeeds_with_its_output_and_leaves_no_directory(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("echo", "hello")).run()
    assert (result.outcome, result.exit_code, result.output, result.output_truncated) == (
        "succeeded",
        0,
        "hello\n",
        False,
    )
    assert result.error is None
    assert result.duration_s >= 0
    await sandbox.removals.finished()
    assert list(sandbox.work_root.iterdir()) == []


async def test_what_a_job_writes_in_its_directory_goes_with_it(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("sh", "-c", "mkdir -p a/b && echo x > a/b/f && echo y > top")).run()
    assert result.outcome == "succeeded", result
    await sandbox.removals.finished()
    assert list(sandbox.work_root.iterdir()) == []


def slowed(remove: Callable[..., None], release: threading.Event) -> Callable[..., None]:
    def slow(*args: Any) -> None:
        release.wait(timeout=30)
        remove(*args)

    return slow


async def test_a_result_does_not_wait_for_its_directory_to_be_removed(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Removal runs in a thread, after the result: a slow file system holds up neither the result nor the agent.
    release = threading.Event()
    # A directory is removed with the others of its batch, or, for a job that ran as a uid of its own without a
    # cgroup, once what still runs as that uid is killed (the sweep): both slow.
    for name in ("_remove_all", "sweep"):
        monkeypatch.setattr(workdirs_module, name, slowed(getattr(workdirs_module, name), release))
    try:
        result = await asyncio.wait_for(sandbox.job(job("sh", "-c", "echo x > left")).run(), timeout=10)
        assert result.outcome == "succeeded", result
        [workdir] = sandbox.work_root.iterdir()  # still there: its removal waits
        assert (workdir / "left").read_text() == "x\n"
        second = await asyncio.wait_for(sandbox.job(job("true")).run(), timeout=10)  # the agent goes on meanwhile
        assert second.outcome == "succeeded", second
    finally:
        release.set()
    await asyncio.wait_for(sandbox.removals.finished(), timeout=10)
    assert list(sandbox.work_root.iterdir()) == []


async def test_a_non_zero_exit_fails_with_its_code_and_stderr_is_interleaved(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("sh", "-c", "echo one; echo two >&2; echo three; exit 3")).run()
    assert (result.outcome, result.exit_code, result.error) == ("failed", 3, None)
    assert result.output == "one\ntwo\nthree\n"


async def test_a_death_by_signal_is_minus_the_signal(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("sh", "-c", "kill -KILL $$")).run()
    assert (result.outcome, result.exit_code, result.error) == ("failed", -9, "killed by SIGKILL")


@pytest.mark.parametrize("command", ["fog-no-such-program", "/etc/passwd"])  # not found; not executable
async def test_a_command_that_cannot_start_fails_without_an_exit_code(sandbox: Sandbox, command: str) -> None:
    result = await sandbox.job(job(command)).run()
    assert (result.outcome, result.exit_code, result.output) == ("failed", None, "")
    assert result.error is not None
    assert result.error.startswith(f"cannot start {command!r}: ")
    await sandbox.removals.finished()
    assert list(sandbox.work_root.iterdir()) == []


async def test_a_timeout_kills_the_whole_tree(sandbox: Sandbox) -> None:
    script = "sleep 100 & echo $!; echo $$; exec sleep 100"  # a background grandchild, then the shell waits
    result = await sandbox.job(job("sh", "-c", script, timeout_s=1)).run()
    assert result.outcome == "timed_out"
    assert result.exit_code == -15  # SIGTERM was enough
    assert result.error == "ran past its timeout of 1 s: stopped"  # not a death of its own
    pids = [int(line) for line in result.output.split()]
    assert len(pids) == 2
    await all_gone(pids)


async def test_cancel_kills_the_whole_tree(sandbox: Sandbox) -> None:
    sandboxed = sandbox.job(job("sh", "-c", "sleep 100 & sleep 100 & wait", timeout_s=60))
    running = asyncio.create_task(sandboxed.run())

    async def two_children() -> list[int]:
        if sandboxed.pid is None:
            return []
        children = [child.pid for child in psutil.Process(sandboxed.pid).children()]
        return [sandboxed.pid, *children] if len(children) == 2 else []

    pids = await wait_until(two_children, timeout=5, what="the job and its two children")
    sandboxed.cancel()
    result = await asyncio.wait_for(running, timeout=10)
    assert (result.outcome, result.exit_code) == ("cancelled", -15)
    await all_gone(pids)


async def test_cancelling_the_task_that_runs_a_job_kills_the_whole_tree(sandbox: Sandbox) -> None:
    sandboxed = sandbox.job(job("sh", "-c", "sleep 100 & echo $!; exec sleep 100", timeout_s=60))
    running = asyncio.create_task(sandboxed.run())

    async def with_a_child() -> list[int]:
        if sandboxed.pid is None:
            return []
        children = [child.pid for child in psutil.Process(sandboxed.pid).children()]
        return [sandboxed.pid, *children] if children else []

    pids = await wait_until(with_a_child, timeout=5, what="the job and its child")
    running.cancel()  # as when the agent leaves without draining
    with pytest.raises(asyncio.CancelledError):
        await running
    await all_gone(pids)
    await sandbox.removals.finished()
    assert list(sandbox.work_root.iterdir()) == []


async def test_what_a_job_leaves_in_the_background_dies_with_it(sandbox: Sandbox) -> None:
    # The background sleep also holds the output pipe: the job still ends when its first process does.
    result = await sandbox.job(job("sh", "-c", "sleep 100 & echo $!", timeout_s=30)).run()
    assert result.outcome == "succeeded"
    await all_gone([int(result.output)])


async def test_output_is_capped_while_the_job_runs_to_its_end(sandbox: Sandbox) -> None:
    five_mib = f"yes hello | head -c {5 * MIB}; echo finished >&2"
    result = await sandbox.job(job("sh", "-c", five_mib, output_limit_bytes=1000)).run()
    assert result.outcome == "succeeded"  # it never blocked on a full pipe
    assert result.output == ("hello\n" * 200)[:1000]
    assert result.output_truncated


async def test_output_of_exactly_the_limit_is_not_truncated(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("head", "-c", "1000", "/dev/zero", output_limit_bytes=1000)).run()
    assert (len(result.output), result.output_truncated) == (1000, False)


async def test_output_that_is_not_utf8_is_replaced(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("printf", "\\377ok \\303\\251")).run()
    assert result.output == "\ufffdok é"


async def test_the_environment_is_the_jobs_and_nothing_of_the_agents(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOG_AGENT_SECRET", "the agent's credential")
    env = {"GREETING": "hi there", "LANG": "en_GB.UTF-8", "FOG_JOB_ID": "forged"}
    result = await sandbox.job(Assignment("j-7", 2, ("env",), env=env, timeout_s=5)).run()
    seen = dict(line.split("=", 1) for line in result.output.splitlines())
    home = Path(seen.pop("HOME"))
    assert home.parent == sandbox.work_root
    assert seen == {
        "GREETING": "hi there",
        "LANG": "en_GB.UTF-8",  # the job may choose its own
        "PATH": PATH,
        "TMPDIR": str(home),  # where a confined job may write
        "FOG_JOB_ID": "j-7",  # but not this
        "FOG_JOB_ATTEMPT": "2",
    }


async def test_gpus_given_to_a_job_are_the_only_ones_it_sees(sandbox: Sandbox) -> None:
    command = ("sh", "-c", 'echo "[$CUDA_VISIBLE_DEVICES]"')
    assert (await sandbox.job(job(*command), gpu_ids=(1, 3)).run()).output == "[1,3]\n"
    assert (await sandbox.job(job(*command), gpu_ids=()).run()).output == "[]\n"


async def test_the_job_id_cannot_lead_the_working_directory_elsewhere(sandbox: Sandbox) -> None:
    result = await sandbox.job(Assignment("../../etc", 1, ("pwd",), timeout_s=5)).run()
    workdir = Path(result.output.strip())
    assert workdir.parent == sandbox.work_root
    assert workdir.name.startswith(".._.._etc.1.")


def in_job_uids(uid: int) -> bool:
    return DEFAULT_JOB_UIDS[0] <= uid <= DEFAULT_JOB_UIDS[1]


@pytest.mark.skipif(not AS_ROOT, reason="only root can run jobs as another user")
async def test_as_root_a_job_runs_as_a_uid_of_its_own_in_a_directory_it_owns(sandbox: Sandbox) -> None:
    script = "id -u; id -g; id -G; echo written > file; cat file; stat -c %u ."
    result = await sandbox.job(job("sh", "-c", script)).run()
    assert result.outcome == "succeeded", result.output
    uid, gid, groups, written, owner = result.output.splitlines()
    assert in_job_uids(int(uid))
    assert gid == groups == uid  # its own group, and none of root's
    assert written == "written"
    assert owner == uid


@pytest.mark.skipif(not AS_ROOT, reason="only root can run jobs as another user")
async def test_as_root_jobs_run_as_one_named_user_when_told(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    box = Sandbox(tmp_path / "work", users=job_users_from_env({"FOG_AGENT_JOB_USER": "nobody"}))
    box.prepare()
    try:
        result = await box.job(job("sh", "-c", "id -u; id -G; stat -c %u .")).run()
    finally:
        await box.close()
    assert result.outcome == "succeeded", result.output
    assert result.output.split() == [str(nobody.pw_uid), str(nobody.pw_gid), str(nobody.pw_uid)]


async def test_a_job_allocating_more_than_its_memory_fails(sandbox: Sandbox) -> None:
    limit = Resources(memory_bytes=64 * MIB)
    too_much = await sandbox.job(job("dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1", resources=limit)).run()
    assert too_much.outcome == "failed"
    assert "memory exhausted" in too_much.output
    within = await sandbox.job(job("dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1", resources=limit)).run()
    assert within.outcome == "succeeded", within.output


#: a job that reserves ``$1`` bytes of address space (``PROT_NONE``, never written), as runtimes do at their start
RESERVE = (
    "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); libc.mmap.restype = ctypes.c_void_p;"
    " libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long];"
    " address = libc.mmap(None, int(sys.argv[1]), 0, 0x22, -1, 0);"  # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS
    " print('reserved' if address not in (None, ctypes.c_void_p(-1).value) else 'refused')"
)


async def test_address_space_reserved_is_not_memory_used_but_is_capped_too(sandbox: Sandbox) -> None:
    limit = Resources(memory_bytes=64 * MIB)
    reserved = await sandbox.job(job("python3", "-c", RESERVE, str(2048 * MIB), resources=limit)).run()
    assert (reserved.outcome, reserved.output) == ("succeeded", "reserved\n")  # Java's or Node.js's start, say
    too_far = str(64 * MIB + ADDRESS_SPACE_SLACK)  # with what python3 itself maps, past the cap
    beyond = await sandbox.job(job("python3", "-c", RESERVE, too_far, resources=limit)).run()
    assert (beyond.outcome, beyond.output) == ("succeeded", "refused\n")
    used = await sandbox.job(job("python3", "-c", "bytearray(128 << 20)", resources=limit)).run()
    assert used.outcome == "failed"
    assert "MemoryError" in used.output


async def test_a_job_says_how_much_cpu_time_and_memory_it_used(sandbox: Sandbox) -> None:
    busy = await sandbox.job(job("dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=4000", timeout_s=60)).run()
    big = await sandbox.job(job("dd", "if=/dev/zero", "of=/dev/null", "bs=48M", "count=1")).run()
    idle = await sandbox.job(job("true")).run()
    assert (busy.outcome, big.outcome, idle.outcome) == ("succeeded", "succeeded", "succeeded")
    assert busy.cpu_s is not None
    assert idle.cpu_s is not None
    assert busy.cpu_s > idle.cpu_s  # copying 4 GB takes CPU time; `true` next to none
    assert big.max_rss_bytes is not None
    assert idle.max_rss_bytes is not None
    assert big.max_rss_bytes >= 48 * MIB > idle.max_rss_bytes  # dd's one 48 MiB buffer was resident


async def test_limits_on_files_core_dumps_and_cpu_time(sandbox: Sandbox) -> None:
    resources = Resources(cpu_cores=1.5)
    result = await sandbox.job(
        job("sh", "-c", "ulimit -n; ulimit -c; ulimit -t; ulimit -d; ulimit -v", timeout_s=2.5, resources=resources)
    ).run()
    files, core, cpu_s, data_kib, address_kib = result.output.split()
    assert (int(files), core) == (MAX_OPEN_FILES, "0")
    assert int(cpu_s) == math.ceil(2.5 * 2) + 1  # what two cores burn in the timeout, and a second
    assert int(data_kib) * 1024 == resources.memory_bytes
    assert int(address_kib) * 1024 == resources.memory_bytes + ADDRESS_SPACE_SLACK


async def test_a_kept_working_directory_stays(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), keep_workdirs=True)
    box.prepare()
    result = await box.job(job("sh", "-c", "echo kept > file")).run()
    assert result.outcome == "succeeded"
    [kept] = box.work_root.iterdir()
    assert (kept / "file").read_text() == "kept\n"


async def test_cancelled_before_it_started_never_runs(sandbox: Sandbox) -> None:
    sandboxed = sandbox.job(job("sh", "-c", "echo ran"))
    sandboxed.cancel()
    result = await sandboxed.run()
    assert (result.outcome, result.exit_code, result.output, sandboxed.pid) == ("cancelled", None, "", None)


@pytest.mark.parametrize(
    ("user", "confinement", "allowed", "refused"),
    [
        (None, None, None, True),  # the agent's own user, nothing between its jobs and its credential
        (None, None, "yes", False),  # its owner said only their jobs run there
        (SharedJobUser(JobUser("nobody", 65534, 65534)), None, None, False),  # another user: the file's mode
        (JobUidRange(*DEFAULT_JOB_UIDS), None, None, False),  # keeps jobs out
        (None, Confinement(1), None, False),  # Landlock keeps them out
    ],
)
def test_jobs_that_could_read_the_agents_credential_are_refused_unless_allowed(
    user: SharedJobUser | JobUidRange | None, confinement: Confinement | None, allowed: str | None, refused: bool
) -> None:
    environ = {} if allowed is None else {"FOG_AGENT_ALLOW_UNCONFINED_JOBS": allowed}
    if refused:
        with pytest.raises(SandboxError, match="FOG_AGENT_ALLOW_UNCONFINED_JOBS=yes"):
            refuse_unconfined(user, confinement, environ)
    else:
        refuse_unconfined(user, confinement, environ)


@pytest.mark.parametrize(("value", "keep"), [(None, False), ("", False), ("0", False), ("false", False), ("1", True)])
def test_keeping_working_directories_is_asked_for(value: str | None, keep: bool) -> None:
    assert keep_workdirs_from_env({} if value is None else {"FOG_AGENT_KEEP_WORKDIRS": value}) is keep


def test_a_directory_the_job_user_cannot_pass_through_is_found(tmp_path: Path) -> None:
    owner = JobUser("owner", os.getuid(), os.getgid())  # the owner of tmp_path and of what leads to it
    closed, open_ = tmp_path / "closed", tmp_path / "open"
    (closed / "work").mkdir(parents=True)
    (open_ / "work").mkdir(parents=True)
    closed.chmod(0o600)  # the owner may list it, not pass through it
    try:
        assert unreachable_ancestor(closed / "work", owner) == closed
        assert unreachable_ancestor(open_ / "work", owner) is None
    finally:
        closed.chmod(0o700)


# -- prepared while the placement commits -------------------------------------------------------------------------


@pytest.fixture
def marker() -> Iterator[Path]:
    """A file a job (as its own user, when the agent is root) would leave if it ran."""
    path = Path(tempfile.gettempdir()) / f"fog-test-ran-{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


def ran(marker: Path) -> bool:
    return marker.exists()


async def prepared_dir(sandbox: Sandbox) -> Path:
    async def made() -> list[Path]:
        return list(sandbox.work_root.iterdir())

    [workdir] = await wait_until(made, timeout=5, what="the prepared job's working directory")
    return workdir


async def nothing_left(sandbox: Sandbox) -> None:
    async def empty() -> bool:
        await sandbox.removals.finished()
        return sandbox.prepared_jobs == 0 and not list(sandbox.work_root.iterdir())

    await wait_until(empty, timeout=5, what="no preparation nor directory left")


async def test_a_prepared_job_runs_in_what_was_prepared_with_its_limits(sandbox: Sandbox, marker: Path) -> None:
    assignment = job("sh", "-c", f"echo ran > {marker}; pwd; ulimit -n; id -u")
    sandbox.prepare_job(assignment)
    workdir = await prepared_dir(sandbox)
    assert not ran(marker), "preparing runs nothing"
    result = await sandbox.job(assignment).run()
    assert result.outcome == "succeeded", result
    assert ran(marker)
    where, files, uid = result.output.split()
    assert (Path(where), int(files)) == (workdir, MAX_OPEN_FILES)  # the limits are set at the go
    assert in_job_uids(int(uid)) if AS_ROOT else int(uid) == os.geteuid()
    await nothing_left(sandbox)


async def test_a_withdrawn_preparation_runs_nothing_and_leaves_nothing(sandbox: Sandbox, marker: Path) -> None:
    assignment = job("sh", "-c", f"echo ran > {marker}")
    sandbox.prepare_job(assignment)
    await prepared_dir(sandbox)
    sandbox.withdraw_job(assignment.key)
    await nothing_left(sandbox)
    assert not ran(marker)


async def test_a_preparation_never_assigned_is_undone_in_time(sandbox: Sandbox, marker: Path) -> None:
    sandbox.prepared_for_s = 0.2
    sandbox.prepare_job(job("sh", "-c", f"echo ran > {marker}"))
    await nothing_left(sandbox)
    assert not ran(marker)
    later = await sandbox.job(job("echo", "assigned late")).run()  # its assignment, late: it starts as usual
    assert later.output == "assigned late\n"


async def test_an_assignment_unlike_its_preparation_runs_as_assigned(sandbox: Sandbox, marker: Path) -> None:
    sandbox.prepare_job(job("sh", "-c", f"echo prepared > {marker}"))
    prepared = await prepared_dir(sandbox)
    result = await sandbox.job(job("pwd")).run()
    assert result.outcome == "succeeded"
    assert Path(result.output.strip()) != prepared
    await nothing_left(sandbox)
    assert not ran(marker)


async def test_a_prepared_job_cancelled_before_it_started_never_runs(sandbox: Sandbox, marker: Path) -> None:
    assignment = job("sh", "-c", f"echo ran > {marker}")
    sandbox.prepare_job(assignment)
    await prepared_dir(sandbox)
    sandboxed = sandbox.job(assignment)
    sandboxed.cancel()
    result = await sandboxed.run()
    assert (result.outcome, sandboxed.pid) == ("cancelled", None)
    await nothing_left(sandbox)
    assert not ran(marker)


async def test_closing_undoes_every_preparation(tmp_path: Path, marker: Path) -> None:
    box = Sandbox(tmp_path / "work", users=job_users_from_env())
    box.prepare()
    box.prepare_job(job("sh", "-c", f"echo ran > {marker}"))
    await prepared_dir(box)
    box.prepare_job(Assignment("j-2", 1, ("true",), timeout_s=5))  # still under way as the agent stops
    box.prepare_job(Assignment("j-3", 1, ("true",), timeout_s=5))
    box.withdraw_job(("j-3", 1))  # being undone as the agent stops
    await box.close()
    await box.removals.finished()
    assert list(box.work_root.iterdir()) == []
    assert box.prepared_jobs == 0
    assert not ran(marker)


# -- confined by Landlock ------------------------------------------------------------------------------------------


@pytest.fixture
async def confined(reachable_dir: Path) -> AsyncIterator[Sandbox]:
    work_root = reachable_dir / "work"  # one the job user can pass through to its HOME (and TMPDIR)
    box = Sandbox(work_root, users=job_users_from_env(), confinement=Confinement(LANDLOCK_ABI), kill_grace_s=0.5)
    box.prepare()
    yield box
    await box.close()
    await box.removals.finished()


@needs_landlock
async def test_a_confined_job_runs_the_systems_programs_and_changes_its_own_directory_alone(
    sandbox: Sandbox, confined: Sandbox, reachable_dir: Path
) -> None:
    secret, shared = reachable_dir / "node.json", reachable_dir / "shared"
    secret.write_text("the agent's credential\n")
    secret.chmod(0o644)  # the job's user may read it, as jobs running as the agent's user may read its state
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    script = (
        f"ls /usr/bin > /dev/null && echo ran; echo mine > here && cat here; echo t > $TMPDIR/t && echo tmpdir;"
        f" cat {secret} || echo not read; echo > {shared}/$$ || echo not written"  # a new file each time
    )
    unconfined = await sandbox.job(job("sh", "-c", script)).run()
    assert "the agent's credential" in unconfined.output, "the file modes let the job's user read it"
    # Again and again: the first job's ruleset is made for it alone; later ones may find it made by their spare.
    for _ in range(3):
        result = await confined.job(job("sh", "-c", script)).run()
        assert [line for line in result.output.splitlines() if "Permission denied" not in line] == [
            "ran", "mine", "tmpdir", "not read", "not written"
        ]  # fmt: skip
    assert len(list(shared.iterdir())) == 1, "only the unconfined job wrote there"


@needs_landlock
async def test_a_confined_job_cannot_reach_processes_outside_it(tmp_path: Path, reachable_dir: Path) -> None:
    # One user for all jobs (as root; else the agent's own): what keeps them apart is Landlock alone.
    users = job_users_from_env({"FOG_AGENT_JOB_USER": "nobody"}) if AS_ROOT else None
    sandbox = Sandbox(tmp_path / "work", users=users, kill_grace_s=0.5)
    confined = Sandbox(reachable_dir / "work", users=users, confinement=Confinement(LANDLOCK_ABI), kill_grace_s=0.5)
    sandbox.prepare()
    confined.prepare()
    target = sandbox.job(job("sleep", "100", timeout_s=60))  # the job's user, outside the confined job
    running = asyncio.create_task(target.run())
    try:

        async def started() -> int | None:
            return target.pid

        pid = await wait_until(started, timeout=5, what="the process to reach")
        reach = (
            f"head -c 1 /proc/{pid}/environ > /dev/null && echo read || echo not read;"
            f" kill -0 {pid} && echo signalled || echo refused"
        )
        assert (await sandbox.job(job("sh", "-c", reach)).run()).output == "read\nsignalled\n", "its user may"
        told = (await confined.job(job("sh", "-c", reach)).run()).output.splitlines()
        seen = [line for line in told if line in ("read", "not read", "signalled", "refused")]  # not the errors
        # Landlock keeps a job from ptrace (and so from another's memory and environment) from ABI 1 on, and
        # scopes signals from ABI 6 (Linux 6.12) on.
        assert seen == ["not read", "refused" if LANDLOCK_ABI >= 6 else "signalled"]
    finally:
        target.cancel()
        await running
        await sandbox.close()
        await confined.close()


def test_landlock_confines_jobs_where_the_kernel_has_it_unless_turned_off() -> None:
    assert confinement_from_env({}, abi=0) is None
    assert confinement_from_env({"FOG_AGENT_LANDLOCK": "off"}, abi=6) is None
    assert confinement_from_env({}, abi=6) == Confinement(6, JOB_READ_PATHS, JOB_WRITE_PATHS)
    added = {"FOG_AGENT_JOB_READ_PATHS": "/srv/models:/data", "FOG_AGENT_JOB_WRITE_PATHS": "/scratch"}
    assert confinement_from_env(added, abi=3) == Confinement(
        3, (*JOB_READ_PATHS, "/srv/models", "/data"), (*JOB_WRITE_PATHS, "/scratch")
    )
    with pytest.raises(SandboxError, match="absolute"):
        confinement_from_env({"FOG_AGENT_JOB_WRITE_PATHS": "scratch"}, abi=3)


def test_a_policy_names_each_path_once_as_it_really_is_and_gpu_devices_only_for_a_job_given_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "data").mkdir()
    read = (str(tmp_path / "usr"), str(tmp_path / "bin"), str(tmp_path / "nothing here"), str(tmp_path / "data"))
    confinement = Confinement(6, read, ("/dev/null",))
    assert confinement.policy() == {"abi": 6, "read": [str(tmp_path / "usr"), str(tmp_path / "data")],
                                    "write": ["/dev/null"]}  # fmt: skip

    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("nvidiactl", "nvidia0", "nvidia1", "nvidia2"):
        (devices / name).touch()
    monkeypatch.setattr(policy_module, "NVIDIA_CONTROL_DEVICES", (str(devices / "nvidiactl"), "/dev/nvidia-none"))
    monkeypatch.setattr(policy_module, "NVIDIA_GPU_DEVICE", str(devices / "nvidia{}"))
    assert confinement.policy([])["write"] == ["/dev/null"]
    assert confinement.policy([0, 2])["write"] == [
        "/dev/null", str(devices / "nvidiactl"), str(devices / "nvidia0"), str(devices / "nvidia2")
    ]  # fmt: skip
