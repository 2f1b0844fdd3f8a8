"""A network of each job's own, as real processes (the agent is root): a job that asks for ``none`` reaches nothing
outside itself, not even what listens on the machine's ``localhost``, while its loopback works; a job of the node's
network reaches it; a node that does not give a network refuses jobs that ask for it, running nothing."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fog_agent.job_messages import Assignment, Network, Resources
from fog_agent.launcher_process import isolate_network, isolated_network_works
from fog_agent.sandbox import Sandbox, SandboxError, job_networks_from_env, job_users_from_env, private_view_from_env
from fog_shared.testing.waiting import wait_until

#: the ``as_nobody`` fixture (conftest.py): runs a check as ``nobody``, and gives its exit code
AsNobody = Callable[[Callable[[], int]], int]
NOBODY = 65534

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="only root may give a job a network of its own")
#: the jobs' shell: bash, whose ``/dev/tcp/HOST/PORT`` connects without any other program
BASH = shutil.which("bash") or "bash"


def job(script: str, *, network: Network) -> Assignment:
    return Assignment("j-1", 1, (BASH, "-c", script), {}, 10.0, Resources(), network=network)


class Listener:
    """A TCP server on the machine's ``127.0.0.1`` that counts who connected: what a job must not reach."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    listening = Listener()
    listening.server = await asyncio.start_server(listening._connected, "127.0.0.1", 0)
    yield listening
    listening.server.close()
    await listening.server.wait_closed()


@pytest.fixture
async def isolating(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A sandbox that gives jobs either network, as ``fog-agent run`` does as root."""
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), private_view=private_view_from_env(),
                  networks=job_networks_from_env(), kill_grace_s=0.5)  # fmt: skip
    box.prepare()
    yield box
    await box.close()
    await box.removals.finished()


def connect_to(port: int) -> str:
    return f"if {{ echo hello > /dev/tcp/127.0.0.1/{port}; }} 2>/dev/null; then echo reached; else echo unreachable; fi"


def test_a_node_gives_jobs_the_networks_its_owner_names_and_it_can() -> None:
    assert job_networks_from_env({}, works=lambda: 0) == ("host", "none")
    assert job_networks_from_env({"FOG_AGENT_JOB_NETWORKS": "none"}, works=lambda: 0) == ("none",)
    assert job_networks_from_env({"FOG_AGENT_JOB_NETWORKS": " Host "}, works=lambda: 0) == ("host",)
    assert job_networks_from_env({"FOG_AGENT_JOB_NETWORKS": ""}, works=lambda: 0) == ("host", "none")


def test_where_jobs_cannot_be_cut_off_the_network_they_get_the_nodes_unless_the_owner_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):  # a container without CAP_SYS_ADMIN, a user not allowed user namespaces
        assert job_networks_from_env({}, works=lambda: errno.EPERM) == ("host",)
    assert "jobs here get the node's network alone" in caplog.text
    assert job_networks_from_env({"FOG_AGENT_JOB_NETWORKS": "host"}, works=lambda: errno.EPERM) == ("host",)
    with pytest.raises(SandboxError, match="names none, but jobs cannot be cut off the network here"):
        job_networks_from_env({"FOG_AGENT_JOB_NETWORKS": "host,none"}, works=lambda: errno.EPERM)
    with pytest.raises(SandboxError, match="name one or both of host, none"):
        job_networks_from_env({"FOG_AGENT_JOB_NETWORKS": "host,bridge"}, works=lambda: 0)
    with pytest.raises(SandboxError, match="name one or both"):
        job_networks_from_env({"FOG_AGENT_JOB_NETWORKS": ","}, works=lambda: 0)


def test_an_agent_that_is_not_root_cuts_a_job_off_the_network_through_a_user_namespace(
    as_nobody: AsNobody, nobody_may: Callable[[Callable[[], int], str], None]
) -> None:
    """What a spare of an agent that is not root does for a job of the ``none`` network, then what the job tries: the
    machine's listener is out of reach, its own loopback is up, it holds no capability, and it is still itself."""
    nobody_may(isolated_network_works, "a network namespace of its own")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def check() -> int:
            isolate_network()
            code = 2 + _reaches(port) * 1 + (not _refused_on_loopback()) * 2 + (_capabilities() != 0) * 4
            return code + (os.geteuid() != NOBODY) * 8

        code = as_nobody(check)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert code == 2, "1: failed; +1 reached; +2 no loopback; +4 capable; +8 not itself"


def _reaches(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _refused_on_loopback() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 1), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _capabilities() -> int:
    """What the child may do as it will after its exec: the capabilities an exec would leave it (none, as nobody)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the grandchild
        os.execv("/bin/sh", ["sh", "-c", "exit $(( 0x$(sed -n 's/^CapEff:\\t*//p' /proc/self/status) != 0 ))"])  # noqa: S606
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_root
def test_this_machine_lets_a_job_have_a_network_of_its_own() -> None:
    assert isolated_network_works() == 0


@needs_root
@pytest.mark.parametrize("prepared", [False, True], ids=["assigned", "prepared"])
async def test_a_job_without_network_reaches_nothing_of_the_machine_but_talks_to_itself(
    isolating: Sandbox, listener: Listener, prepared: bool
) -> None:
    within = (
        # refused by a loopback that is up (one that is down is unreachable)
        "{ exec 3<>/dev/tcp/127.0.0.1/1; } 2>&1 | grep -m1 -o 'Connection refused';"
        " tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"  # its interfaces
    )
    assignment = job(f"{connect_to(listener.port)}; {within}", network="none")
    if prepared:
        isolating.prepare_job(assignment)
    result = await isolating.job(assignment).run()
    assert result.outcome == "succeeded", result
    assert result.output.split() == ["unreachable", "Connection", "refused", "lo"]
    assert listener.connections == 0


#: connects to the Unix socket ``$1``, as a job would to a service of the machine (Postgres', D-Bus, Docker's)
CONNECT_UNIX = (
    "import socket, sys\ntry:\n    socket.socket(socket.AF_UNIX).connect(sys.argv[1])\n    print('reached')\n"
    "except OSError:\n    print('unreachable')"
)


@pytest.fixture
async def unix_service() -> AsyncIterator[Path]:
    """A server on a Unix socket in ``/run``, where the machine's services have theirs, open to every user."""
    path = Path("/run") / f"fog-test-{os.getpid()}-{id(object())}.sock"
    server = await asyncio.start_unix_server(lambda _, writer: writer.close(), path)
    path.chmod(0o777)
    yield path
    server.close()
    await server.wait_closed()
    path.unlink(missing_ok=True)


@needs_root
async def test_a_job_without_network_reaches_no_unix_socket_of_the_machines_services(
    isolating: Sandbox, unix_service: Path
) -> None:
    assert isolating.private_run
    command = ("python3", "-c", CONNECT_UNIX, str(unix_service))
    for network, expected in (("host", "reached\n"), ("none", "unreachable\n")):
        assignment = Assignment("j-1", 1, command, {}, 10.0, Resources(), network=network)
        result = await isolating.job(assignment).run()
        assert (network, result.outcome, result.output) == (network, "succeeded", expected)


@needs_root
async def test_a_job_of_the_nodes_network_reaches_what_the_node_reaches(isolating: Sandbox, listener: Listener) -> None:
    result = await isolating.job(job(connect_to(listener.port), network="host")).run()
    assert (result.outcome, result.output) == ("succeeded", "reached\n")

    async def counted() -> bool:
        return listener.connections == 1

    await wait_until(counted, timeout=5, what="the job's connection")


async def test_a_node_that_gives_no_such_network_refuses_the_job_and_runs_nothing(
    tmp_path: Path, listener: Listener
) -> None:
    marker = tmp_path / "ran"
    for given, asked in ((("host",), "none"), (("none",), "host")):
        box = Sandbox(tmp_path / f"work-{asked}", users=job_users_from_env(), networks=given)
        box.prepare()
        try:
            assignment = job(f"touch {marker}; {connect_to(listener.port)}", network=asked)  # type: ignore[arg-type]
            box.prepare_job(assignment)
            result = await box.job(assignment).run()
        finally:
            await box.close()
            await box.removals.finished()
        assert (result.outcome, result.exit_code) == ("failed", None)
        assert result.error is not None
        assert f"this node gives jobs no {asked!r} network" in result.error
        assert not marker.exists()
        assert box.prepared_jobs == 0
    assert listener.connections == 0
