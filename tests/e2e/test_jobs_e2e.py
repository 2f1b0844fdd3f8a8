"""Jobs on the real stack: fogctl and the HTTP API in front, real agents running real processes.

The stack runs with a 1 s heartbeat interval (a dead node is down after 4 s). Tests that kill
agents start their own, with a label only their jobs ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
from devstack_driver import FOGCTL, RunningStack, email, fogctl, heartbeat_interval, open_stack
from partition_proxy import PartitionProxy

from fog_client import ApiError, Constraints, FogClient, JobSpec, Resources
from fog_shared.testing.waiting import wait_until
from fogctl.devstack import DEV_AGENT_ENVIRONMENT

pytestmark = pytest.mark.e2e
INTERVAL_S = heartbeat_interval(1.0)
PASSWORD = "a long and unguessable password"
AGENT = [sys.executable, "-m", "fog_agent"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = open_stack(tmp_path_factory.mktemp("jobs-e2e"), "--heartbeat-interval", str(INTERVAL_S))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def stack(running: RunningStack) -> RunningStack:
    await running.ready()
    return running


async def user(stack: RunningStack, email: str, roles: tuple[str, ...] = ("user",)) -> FogClient:
    fog = FogClient(stack.state["gateway_url"])
    await fog.register(email, PASSWORD, roles=roles)
    await fog.login(email, PASSWORD)
    return fog


async def ended(fog: FogClient, job_id: str, timeout: float = 30) -> Any:
    return await asyncio.wait_for(fog.wait_job(job_id, poll_s=0.1), timeout=timeout)


async def status_is(fog: FogClient, job_id: str, status: str, timeout: float = 20) -> Any:
    async def reached() -> Any:
        job = await fog.get_job(job_id)
        return job if job.status == status else None

    return await wait_until(reached, timeout=timeout, interval=0.1, what=f"job {status}")


def processes_running(marker: str) -> list[int]:
    """Processes on this machine whose command line holds ``marker``."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []):
            found.append(process.info["pid"])
    return found


async def none_running(marker: str) -> bool:
    return not await asyncio.to_thread(processes_running, marker)


async def test_fogctl_submit_wait_echo_hello(stack: RunningStack) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}  # fogctl is logged in as the first admin
    code, out = await fogctl("job", "submit", "--wait", "--", "echo", "hello", env=config)
    assert (code, out) == (0, "hello\n")
    code, listed = await fogctl("job", "list", "--json", env=config)
    newest = json.loads(listed)["items"][0]
    assert (newest["status"], newest["spec"]["command"]) == ("succeeded", ["echo", "hello"])
    code, got = await fogctl("job", "get", newest["id"], env=config)
    assert code == 0
    assert "cpu_time" in got
    assert "max_memory" in got
    assert newest["cpu_s"] is not None  # measured by the agent that ran it
    assert newest["max_rss_bytes"] > 0
    code, out = await fogctl("job", "rerun", newest["id"], "--wait", env=config)
    assert (code, out) == (0, "hello\n")
    code, listed = await fogctl("job", "list", "--json", "--limit", "2", env=config)
    again, first = json.loads(listed)["items"]  # the last submitted first
    assert first["id"] == newest["id"]
    assert (again["status"], again["spec"]["command"]) == ("succeeded", ["echo", "hello"])

    async def contributed() -> bool:  # the node that ran it counts what it gave (the registry, from the outcome)
        code, shown = await fogctl("node", "get", newest["node_id"], "--json", env=config)
        given = json.loads(shown)["contribution"]
        return bool(code == 0 and given["attempts_succeeded"] >= 1 and given["run_s"] > 0)

    await wait_until(contributed, timeout=10, what="the job counted in its node's contribution")


async def test_a_jobs_files_reach_it_on_its_node_and_its_outputs_come_back(stack: RunningStack, tmp_path: Path) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}
    words = tmp_path / "words.txt"
    words.write_bytes(b"fog\n")
    script = "tr a-z A-Z < in/words.txt > out.txt && head -c 3 /dev/zero > zeros.bin && cat out.txt"
    code, out = await fogctl(
        "job", "submit", "--wait", "--file", f"{words}:in/words.txt", "--output", "out.txt", "--output", "zeros.bin",
        "--output", "absent.txt", "--", "sh", "-c", script, env=config,
    )  # fmt: skip
    assert (code, out) == (0, "FOG\n")
    code, listed = await fogctl("job", "list", "--json", "--limit", "1", env=config)
    job_id = json.loads(listed)["items"][0]["id"]
    code, shown = await fogctl("job", "files", job_id, "--json", env=config)
    files = json.loads(shown)
    assert [(f["path"], f["size"]) for f in files["items"]] == [("out.txt", 4), ("zeros.bin", 3)]
    assert files["missing"] == ["absent.txt"]
    fetched = tmp_path / "fetched.txt"
    code, _ = await fogctl("job", "download", job_id, "out.txt", "--output", str(fetched), env=config)
    assert (code, fetched.read_bytes()) == (0, b"FOG\n")
    code, zeros = await fogctl("job", "download", job_id, "zeros.bin", "--output", "-", env=config)
    assert (code, zeros) == (0, "\x00\x00\x00")


async def test_a_job_after_an_array_runs_once_all_its_jobs_succeeded_and_one_after_a_failure_never_but_after_any(
    stack: RunningStack,
) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}
    mapping = ("job", "submit", "--array", "3", "--cpu", "0.25", "--", "sh", "-c", "sleep 0.3")
    code, out = await fogctl(*mapping, env=config)
    assert code == 0
    array_id = out.strip()
    code, out = await fogctl("job", "submit", "--after", array_id, "--wait", "--", "echo", "reduced", env=config)
    assert (code, out) == (0, "reduced\n")
    code, listed = await fogctl("job", "list", "--json", "--array", array_id, env=config)
    mapped = json.loads(listed)["items"]
    code, listed = await fogctl("job", "list", "--json", "--limit", "1", env=config)
    [reduced] = json.loads(listed)["items"]
    assert reduced["spec"]["after"] == [array_id]
    assert [job["status"] for job in mapped] == ["succeeded"] * 3
    assert max(job["finished_at"] for job in mapped) <= reduced["started_at"]  # ISO 8601 UTC: ordered as text

    marker = "until [ -e fail ]; do sleep 0.0505; done; false"  # fails once told to: after the next submit
    code, out = await fogctl("job", "submit", "--max-attempts", "1", "--", "sh", "-c", marker, env=config)
    failing = out.strip()
    code, out = await fogctl("job", "submit", "--after", failing, "--", "echo", "never", env=config)
    assert code == 0, out
    never = out.strip()
    code, out = await fogctl("job", "submit", "--after-any", failing, "--", "echo", "cleaned up", env=config)
    cleanup = out.strip()
    await wait_until(lambda: _some_running(marker), timeout=10, what="the job to fail running")
    touch_in_its_directory(marker, "fail")
    code, out = await fogctl("job", "wait", cleanup, env=config)
    assert (code, out) == (0, "cleaned up\n")  # after any end, a failure's too
    code, out = await fogctl("job", "wait", never, "--json", env=config)
    waited = json.loads(out)
    assert (code, waited["job"]["status"], waited["output"]["output"]) == (1, "cancelled", "")
    assert waited["job"]["error"] == f"never ran: job {failing}, which it was to run after, ended failed"


async def test_a_job_reaches_its_own_directory_by_its_path(stack: RunningStack) -> None:
    # `python3 script.py` opens the script by its absolute path: every directory on the way must let the job's own
    # user through, and a root agent's default work directory was once inside its root-only state directory.
    fog = await user(stack, email("ines"))
    script = 'echo "print(6 * 7)" > s.py && python3 "$PWD/s.py" && cd "$HOME" && pwd > /dev/null'
    job = await fog.submit_job(JobSpec(command=["sh", "-c", script], max_attempts=1))
    done = await ended(fog, job.id)
    assert (done.status, (await fog.job_output(job.id)).output) == ("succeeded", "42\n"), done.error


async def test_constraints_hold_and_explain_says_why_a_job_waits(stack: RunningStack) -> None:
    fog = await user(stack, email("cora"))
    nowhere = await fog.submit_job(JobSpec(command=["true"], constraints=Constraints(labels={"gpu": "a100"})))
    too_big = await fog.submit_job(JobSpec(command=["true"], resources=Resources(cpu_cores=64)))
    placed = await fog.submit_job(JobSpec(command=["true"], constraints=Constraints(labels={"dev": "true"})))
    assert (await ended(fog, placed.id)).status == "succeeded"

    async def explained(job_id: str) -> dict[str, int] | None:
        why = await fog.explain_job(job_id)
        # Nodes not ready ("node down": an earlier run's, on a deployed Fog) are left out for that.
        return {reason: n for reason, n in why.filtered.items() if not reason.startswith("node ")} or None

    # Every ready node is excluded, for the one reason: the two dev agents (more on a shared target).
    unlabelled = await wait_until(lambda: explained(nowhere.id), timeout=10, what="explain")
    assert list(unlabelled) == ["label gpu=a100 missing"]
    assert unlabelled["label gpu=a100 missing"] >= 2
    too_small = await wait_until(lambda: explained(too_big.id), timeout=10, what="explain")
    assert list(too_small) == ["too few CPU cores"]
    assert too_small["too few CPU cores"] >= 2
    assert (await fog.get_job(nowhere.id)).status == "pending"
    other = await user(stack, email("dora"))
    with pytest.raises(ApiError) as hidden:
        await other.job_output(placed.id)
    assert hidden.value.status == 404
    with pytest.raises(ApiError) as bad:
        await fog.submit_job(JobSpec(command=["true"], env={"HUGE": "x" * 40_000}))
    assert bad.value.status == 422


async def test_a_job_is_held_to_the_disk_it_states_and_waits_while_no_node_has_that_much(stack: RunningStack) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}
    writes = "head -c 8388608 /dev/zero > data; sleep 30"  # 8 MiB, then it would run on
    code, job_id = await fogctl(
        "job", "submit", "--disk", "2M", "--max-attempts", "1", "--label", "dev=true", "--", "sh", "-c", writes,
        env=config,
    )  # fmt: skip
    assert code == 0
    code, _ = await fogctl("job", "wait", job_id.strip(), env=config)
    assert code != 0
    code, shown = await fogctl("job", "get", job_id.strip(), "--json", env=config)
    stopped = json.loads(shown)
    assert stopped["status"] == "failed"
    assert stopped["error"].endswith("MiB, more than the 2 MiB of disk it stated (resources.disk_bytes)")
    code, out = await fogctl("job", "submit", "--wait", "--disk", "64M", "--", "sh", "-c", "head -c 1048576 /dev/zero"
                             " > data && echo kept", env=config)  # fmt: skip
    assert (code, out) == (0, "kept\n")

    fog = await user(stack, email("desi"))
    too_big = await fog.submit_job(JobSpec(command=["true"], resources=Resources(disk_bytes=1 << 50)))
    why = await wait_until(lambda: _filtered(fog, too_big.id), timeout=10, what="explain")
    assert list(why) == ["too little disk"]
    assert why["too little disk"] >= 2  # the two dev agents
    assert (await fog.get_job(too_big.id)).status == "pending"
    await fog.cancel_job(too_big.id)


async def test_a_job_without_network_cannot_reach_the_gateway_its_node_reaches(stack: RunningStack) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}
    fog = await user(stack, email("nina"))
    gateway = urlsplit(stack.state["gateway_url"])
    script = (
        f"if {{ echo > /dev/tcp/{gateway.hostname}/{gateway.port}; }} 2>/dev/null; then echo reached; "
        "else echo unreachable; fi"
    )
    code, listed = await fogctl("node", "list", "--status", "ready", "--label", "dev=true", "--json", env=config)
    offered = [node["capabilities"]["networks"] for node in json.loads(listed)["items"]]
    assert offered
    if os.geteuid() == 0:
        assert all(networks == ["host", "none"] for networks in offered), "root dev agents give both"
    if not all("none" in networks for networks in offered):  # a user the kernel allows no user namespace
        job = await fog.submit_job(JobSpec(command=["bash", "-c", script], network="none"))
        why = await wait_until(lambda: _filtered(fog, job.id), timeout=10, what="explain")
        assert list(why) == ["no isolated network for jobs"]
        return
    code, out = await fogctl("job", "submit", "--wait", "--network", "none", "--", "bash", "-c", script, env=config)
    assert (code, out) == (0, "unreachable\n")
    code, out = await fogctl("job", "submit", "--wait", "--", "bash", "-c", script, env=config)
    assert (code, out) == (0, "reached\n"), "a job of the node's network reaches what the node reaches"


async def _filtered(fog: FogClient, job_id: str) -> dict[str, int] | None:
    why = await fog.explain_job(job_id)
    return {reason: n for reason, n in why.filtered.items() if not reason.startswith("node ")} or None


async def test_a_job_past_its_timeout_is_killed_with_its_children(stack: RunningStack) -> None:
    fog = await user(stack, email("tim"))
    marker = "sleep 61.0101"
    job = await fog.submit_job(JobSpec(command=["sh", "-c", f"{marker} & {marker}"], timeout_s=2))
    await status_is(fog, job.id, "running")
    await wait_until(lambda: _some_running(marker), timeout=10, what="the job's processes")
    done = await ended(fog, job.id)
    assert done.status == "timed_out"
    assert done.error == "ran past its timeout of 2 s: stopped"
    await wait_until(lambda: none_running(marker), timeout=10, what="the job's whole tree gone")


async def _some_running(marker: str) -> bool:
    return not await none_running(marker)


async def test_a_failing_job_is_retried_with_backoff_then_fails(stack: RunningStack) -> None:
    fog = await user(stack, email("fay"))
    spec = JobSpec(command=["sh", "-c", "echo trying; exit 3"], max_attempts=3, retry_backoff_s=0.2)
    job = await fog.submit_job(spec)
    done = await ended(fog, job.id)
    assert (done.status, done.attempt, done.exit_code) == ("failed", 3, 3)
    assert (await fog.job_output(job.id)).output == "trying\n"


async def test_cancel_stops_a_running_job_on_the_node(stack: RunningStack) -> None:
    fog = await user(stack, email("cal"))
    marker = "sleep 62.0202"
    job = await fog.submit_job(JobSpec(command=["sh", "-c", marker]))
    await status_is(fog, job.id, "running")
    await wait_until(lambda: _some_running(marker), timeout=10, what="the job running")
    assert (await fog.cancel_job(job.id)).status == "cancelled"
    await wait_until(lambda: none_running(marker), timeout=10, what="the job killed")


async def test_what_a_running_job_prints_is_followed_as_it_comes(stack: RunningStack) -> None:
    fog = await user(stack, email("flo"))
    marker = f"fog-follow-{uuid.uuid4().hex}"  # its shell's $0: finds it among the machine's processes
    script = "echo one; while [ ! -e go ]; do sleep 0.1; done; echo two"  # the second line once the test says so
    job = await fog.submit_job(JobSpec(command=["sh", "-c", script, marker]))
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}  # fogctl is logged in as the first admin
    fogctl_follows = asyncio.create_task(fogctl("job", "logs", "--follow", job.id, env=config))
    fogctl_waits = await asyncio.create_subprocess_exec(
        *FOGCTL, "job", "wait", job.id, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **config},
    )  # fmt: skip
    assert fogctl_waits.stdout is not None
    pieces: list[Any] = []

    async def follow() -> None:
        async for piece in fog.follow_output(job.id, poll_s=0.1):
            pieces.append(piece)

    following = asyncio.create_task(follow())

    async def first_line_seen_while_running() -> bool:
        return "".join(p.output for p in pieces) == "one\n" and not pieces[-1].ended

    await wait_until(first_line_seen_while_running, timeout=20, what="'one' followed while the job runs")
    assert await asyncio.wait_for(fogctl_waits.stdout.readline(), timeout=20) == b"one\n", "printed as it came"
    await asyncio.to_thread(touch_in_its_directory, marker, "go")
    await asyncio.wait_for(following, timeout=20)
    assert "".join(p.output for p in pieces) == "one\ntwo\n"
    assert pieces[-1].ended
    assert (await fog.get_job(job.id)).status == "succeeded"
    assert await asyncio.wait_for(fogctl_follows, timeout=20) == (0, "one\ntwo\n")
    assert await asyncio.wait_for(fogctl_waits.stdout.read(), timeout=20) == b"two\n"
    assert await asyncio.wait_for(fogctl_waits.wait(), timeout=20) == 0


def touch_in_its_directory(marker: str, name: str) -> None:
    """Make a file in the working directory of the running job whose argv holds ``marker``: through ``/proc``, as
    the job sees it (a job may have a ``/tmp`` of its own, and its directory's path is the agent's to choose)."""
    [pid] = [p.pid for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    Path(f"/proc/{pid}/cwd", name).touch()


async def test_fogctl_cancels_a_whole_array_and_its_running_jobs_are_killed(stack: RunningStack) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}  # fogctl is logged in as the first admin
    marker = "sleep 64.0404"
    code, out = await fogctl("job", "submit", "--array", "3", "--cpu", "0.25", "--", "sh", "-c", marker, env=config)
    assert code == 0
    array_id = out.strip()

    async def all_three_running() -> bool:
        _, shown = await fogctl("job", "array", "show", array_id, "--json", env=config)
        return bool(json.loads(shown)["statuses"] == {"running": 3})

    await wait_until(all_three_running, timeout=20, interval=0.1, what="the array's jobs running")
    await wait_until(lambda: _some_running(marker), timeout=10, what="their processes")
    code, out = await fogctl("job", "array", "cancel", array_id, "--json", env=config)
    assert code == 0
    assert json.loads(out)["statuses"] == {"cancelled": 3}
    await wait_until(lambda: none_running(marker), timeout=10, what="the array's jobs killed")
    code, out = await fogctl("job", "array", "wait", array_id, "--json", env=config)
    assert (code, json.loads(out)["ended"]) == (1, 3), "waiting ends at once, and not in success"


def join_and_run(
    stack: RunningStack,
    state_dir: Path,
    email: str,
    name: str,
    pool: str = "kill",
    gateway: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """An agent of its own, labelled ``pool=<pool>``, talking to ``gateway`` (the stack's by default), with
    ``env`` over its environment."""
    subprocess.run(
        [*AGENT, "join", "--gateway", gateway or stack.state["gateway_url"], "--name", name, "--label", f"pool={pool}",
         "--email", email, "--password-stdin", "--state-dir", str(state_dir)],
        input=PASSWORD.encode(), capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    log = (state_dir.parent / f"{name}.log").open("ab")
    environment = {**os.environ, **DEV_AGENT_ENVIRONMENT, **(env or {})}  # as `fogctl dev up` runs its agents
    return subprocess.Popen([*AGENT, "run", "--state-dir", str(state_dir)], stdout=log, stderr=log, env=environment)


async def test_a_node_whose_disk_runs_low_stops_the_job_filling_it_and_tells_its_owner(
    stack: RunningStack, tmp_path: Path
) -> None:
    owner = await user(stack, email("dana"), roles=("user", "provider"))
    low = {"FOG_AGENT_DISK_RESERVE": "99%"}  # the machine's disk is low for this agent: below 99 % free
    agent = join_and_run(stack, tmp_path / "full", email("dana"), "full", pool="full-disk", env=low)
    try:

        async def ready() -> Any:
            return await owner.list_nodes(status="ready", labels={"pool": "full-disk"})

        [node] = await wait_until(ready, timeout=20, what="the agent ready")

        async def declared_at_start() -> bool:  # it joined with the default reserve of 5 %, and runs with 99 %
            return (await owner.get_node(node.id)).capabilities.disk_bytes == 0

        await wait_until(declared_at_start, timeout=20, what="no disk for jobs declared at the agent's start")
        writer = ["sh", "-c", "head -c 100000000 /dev/zero > big; sleep 60"]  # 95 MiB: past what the guard blames
        spec = JobSpec(command=writer, constraints=Constraints(labels={"pool": "full-disk"}), max_attempts=1)
        job = await owner.submit_job(spec)
        done = await ended(owner, job.id, timeout=60)
        assert done.status == "failed"
        assert "the node's disk ran low" in (done.error or "")

        async def told() -> list[Any]:
            found = await owner.search_messages("disk ran low")
            return [message for message in found.items if message.sender_id == f"node:{node.id}"]

        [message] = await wait_until(told, timeout=20, what="the owner told over BitChat")
        assert f"I stopped job {job.id}, whose directory held 95 MiB" in (message.text or "")
    finally:
        agent.send_signal(signal.SIGTERM)
        await asyncio.to_thread(agent.wait, 30)
    assert agent.returncode == 0
    # Gone for good as far as it knows: no empty directory of it is left (as root, below /var/lib/fog-agent).
    work = tmp_path / "full" / "work" if os.geteuid() != 0 else Path("/var/lib/fog-agent") / node.id
    assert not work.exists()


async def test_kill_9_an_agent_mid_job_the_job_is_lost_then_succeeds_elsewhere_never_twice(
    stack: RunningStack, tmp_path: Path
) -> None:
    owner = await user(stack, email("kim"), roles=("user", "provider"))
    agents = [join_and_run(stack, tmp_path / name, email("kim"), name) for name in ("k1", "k2")]
    try:

        async def both_ready() -> bool:
            return len(await owner.list_nodes(status="ready", labels={"pool": "kill"})) == 2

        await wait_until(both_ready, timeout=20, what="two agents ready")
        # A job with a child: the agent's launcher kills the whole process group when the agent dies.
        marker = "4.0303"
        command = ["sh", "-c", f"sleep {marker} & sleep {marker}; wait"]
        spec = JobSpec(command=command, constraints=Constraints(labels={"pool": "kill"}))
        job = await owner.submit_job(spec)
        first = await status_is(owner, job.id, "running")
        await wait_until(lambda: _some_running(marker), timeout=10, what="the job running")
        victim_name = (await owner.get_node(first.node_id)).name
        victim = agents[("k1", "k2").index(victim_name)]
        victim.send_signal(signal.SIGKILL)
        # The job dies with its agent: it never runs beside its next attempt.
        await wait_until(lambda: none_running(marker), timeout=5, what="the first attempt gone with its agent")
        done = await ended(owner, job.id, timeout=60)
        assert (done.status, done.attempt) == ("succeeded", 2)
        assert done.node_id != first.node_id
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
            await asyncio.to_thread(agent.wait, 30)


async def test_a_node_cut_off_stops_its_job_before_the_job_runs_again_elsewhere(
    stack: RunningStack, tmp_path: Path
) -> None:
    """A partition: the far node's line to the gateway goes silent, neither end closed. The node is declared
    down after four intervals and its job runs again on the near node; the far agent, hearing nothing for
    three, has killed its copy first. At no moment do two copies run."""
    owner = await user(stack, email("pat"), roles=("user", "provider"))
    proxy = PartitionProxy(stack.state["gateway_url"])
    far_url = await proxy.start()
    # In a thread: the proxy serves the join from this event loop.
    agents = [await asyncio.to_thread(join_and_run, stack, tmp_path / "far", email("pat"), "far", "cut", far_url)]

    @contextlib.contextmanager
    def partitioned() -> Iterator[None]:
        proxy.partition()
        yield

    try:
        owner_and_email = (owner, email("pat"))
        await _runs_again_elsewhere_never_twice_at_once(
            stack, tmp_path, owner_and_email, agents, "cut", "6.0606", partitioned
        )
    finally:
        proxy.heal()
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
            await asyncio.to_thread(agent.wait, 30)
        await proxy.close()


async def test_a_frozen_agent_has_its_job_stopped_by_its_launcher_before_the_job_runs_again_elsewhere(
    stack: RunningStack, tmp_path: Path
) -> None:
    """An agent stopped with ``SIGSTOP`` (a debugger, a Ctrl-Z; its jobs run on, in sessions of their own) sends
    no heartbeat and cannot stop its jobs. The node is declared down after four intervals and its job runs
    again on another node; the agent's launcher, heard from no more, has killed the first copy before that.
    At no moment do two copies run. Continued, the agent comes back and the node is ready again."""
    owner = await user(stack, email("sam"), roles=("user", "provider"))
    agents = [join_and_run(stack, tmp_path / "frozen", email("sam"), "frozen", pool="freeze")]

    @contextlib.contextmanager
    def frozen() -> Iterator[None]:
        agents[0].send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            agents[0].send_signal(signal.SIGCONT)

    try:
        owner_and_email = (owner, email("sam"))
        await _runs_again_elsewhere_never_twice_at_once(
            stack, tmp_path, owner_and_email, agents, "freeze", "6.0707", frozen
        )
        await wait_until(lambda: _ready(owner, "freeze", 2), timeout=30, what="the continued agent's node ready again")
    finally:
        for agent in agents:
            agent.send_signal(signal.SIGCONT)
            agent.send_signal(signal.SIGTERM)
            await asyncio.to_thread(agent.wait, 30)


async def _ready(owner: FogClient, pool: str, count: int) -> bool:
    return len(await owner.list_nodes(status="ready", labels={"pool": pool})) == count


async def _runs_again_elsewhere_never_twice_at_once(
    stack: RunningStack,
    tmp_path: Path,
    owner: tuple[FogClient, str],
    agents: list[subprocess.Popen[bytes]],
    pool: str,
    marker: str,
    fault: Callable[[], contextlib.AbstractContextManager[None]],
) -> None:
    """A job (``sleep <marker>``) of ``owner`` (the client and its e-mail) runs on ``agents[0]``, a second agent of
    theirs joins the pool, and ``fault`` befalls the first: the job ends succeeded on its second attempt on the other
    node, and two copies never ran at once."""
    owner_client, owner_email = owner
    await wait_until(lambda: _ready(owner_client, pool, 1), timeout=20, what="the first agent ready")
    spec = JobSpec(command=["sleep", marker], constraints=Constraints(labels={"pool": pool}))
    job = await owner_client.submit_job(spec)
    first = await status_is(owner_client, job.id, "running")
    await wait_until(lambda: _some_running(marker), timeout=10, what="the job's process")
    agents.append(join_and_run(stack, tmp_path / "second", owner_email, "second", pool=pool))
    await wait_until(lambda: _ready(owner_client, pool, 2), timeout=20, what="the second agent ready")

    copies = CopiesWatch(marker)
    watching = asyncio.create_task(copies.watch())
    with fault():
        done = await ended(owner_client, job.id, timeout=60)
    watching.cancel()
    assert (done.status, done.attempt) == ("succeeded", 2)
    assert done.node_id != first.node_id
    assert copies.most == 1, f"{copies.most} copies of the job ran at once"


class CopiesWatch:
    """How many processes of a job ran at once, at most, sampled as often as the machine allows."""

    def __init__(self, marker: str) -> None:
        self.marker, self.most = marker, 0

    async def watch(self) -> None:
        while True:
            self.most = max(self.most, len(await asyncio.to_thread(processes_running, self.marker)))
            await asyncio.sleep(0.02)  # the sampling period, not synchronisation


@pytest.mark.local_stack
async def test_a_scheduler_restart_during_a_1000_job_array_loses_none_and_runs_none_twice(stack: RunningStack) -> None:
    fog = await user(stack, email("ari"))
    dev_nodes = Constraints(labels={"dev": "true"})
    spec = JobSpec(command=["true"], resources=Resources(cpu_cores=0.25), constraints=dev_nodes)
    array = await fog.submit_array(spec, 1000)

    async def succeeded() -> list[Any]:
        return [job async for job in fog.iter_jobs(array_id=array.array_id, status="succeeded", limit=1000)]

    await wait_until(lambda: _count_at_least(succeeded(), 100), timeout=120, interval=0.5, what="100 jobs done")
    scheduler = next(p for p in stack.state["processes"] if p["name"] == "scheduler")
    psutil.Process(scheduler["pid"]).kill()  # the dev supervisor starts it again
    done = await wait_until(lambda: _count_at_least(succeeded(), 1000), timeout=240, interval=1, what="all done")
    assert len({job.id for job in done}) == 1000, "none lost"
    assert {job.attempt for job in done} == {1}, "none ran twice"


async def _count_at_least(jobs: Any, expected: int) -> Any:
    try:
        found = await jobs
    except ApiError as exc:
        if exc.status == 503:  # the scheduler is restarting
            return None
        raise
    return found if len(found) >= expected else None
