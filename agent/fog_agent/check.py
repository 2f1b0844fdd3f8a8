"""``fog-agent check``: what a job gets on this machine, tried with real jobs, before the machine is offered.

It makes the sandbox as ``fog-agent run`` would (the same settings, the same refusals) and runs jobs in it that look
at what they were given: as whom they run, whether they can read a file kept as the node's credential is, whether
they see the agent's process, whether they can read their ``/proc`` and write ``/dev/shm``, whether their ``/tmp`` is
their own, whether they are in a cgroup of their own, and whether a job cut off the network reaches a server on this
machine's ``localhost``. Each finding is set against what the settings promise (``assess``, pure): the command exits
1 if one does not hold, so an owner, or a provisioning script, learns it before a stranger's job does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from fog_agent import cgroups
from fog_agent.cli import StateDirOption, fail
from fog_agent.job_messages import Assignment, Network, Resources
from fog_agent.run import WorkDirOption
from fog_agent.sandbox import JobUidRange, Sandbox, SandboxError, SharedJobUser, sandbox_from_env
from fog_agent.state import default_state_dir

#: what the looking job prints, one ``key=value`` a line: ``SECRET`` is the file it must not read, ``AGENT`` the pid
#: it must not see
_LOOK = """
echo "uid=$(id -u)"
echo "no_new_privs=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status)"
if cat "$SECRET" >/dev/null 2>&1; then echo credential=read; else echo credential=denied; fi
if test -e "/proc/$AGENT"; then echo agent=seen; else echo agent=hidden; fi
echo "tmp=$(stat -c %d:%i /tmp)"
if head -c 1 /proc/self/status >/dev/null 2>&1; then echo proc=readable; else echo proc=unreadable; fi
if echo x > "/dev/shm/fog-check-$$" 2>/dev/null; then echo shm=writable; else echo shm=unwritable; fi
rm -f "/dev/shm/fog-check-$$"
echo "cgroup=$(sed -n 's/^0:://p' /proc/self/cgroup)"
"""
#: what the job cut off the network tries: this machine's ``localhost``, where the check listens
_REACH = (
    'if { echo > "/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null; then echo network=reached;'
    " else echo network=unreachable; fi"
)
TIMEOUT_S = 30.0
#: what the check says of the network when it has no bash to try it with
NOT_TRIED = "not tried: no bash here"


@dataclass(frozen=True)
class Finding:
    what: str
    expected: str
    seen: str
    holds: bool


@dataclass(frozen=True)
class Promises:
    """What the sandbox's settings say a job gets here."""

    agent_uid: int
    #: ``(first, last)`` of the jobs' own uids; a single named user's uid; or None (the agent's own user)
    job_uids: tuple[int, int] | None
    confined: bool
    hides_processes: bool
    own_tmp: bool
    own_cgroup: bool
    isolates_network: bool

    @classmethod
    def of(cls, sandbox: Sandbox) -> Promises:
        users = sandbox.users
        uids = None
        if isinstance(users, JobUidRange):
            uids = (users.first, users.last)
        elif isinstance(users, SharedJobUser):
            uids = (users.sample.uid, users.sample.uid)
        return cls(
            agent_uid=os.geteuid(),
            job_uids=uids,
            confined=sandbox.confinement is not None,
            hides_processes=sandbox.hides_processes,
            own_tmp=sandbox.private_tmp,
            own_cgroup=sandbox.cgroups is not None,
            isolates_network="none" in sandbox.networks,
        )


def assess(promises: Promises, seen: Mapping[str, str], machine_tmp: str) -> list[Finding]:
    """Each thing a job was seen to get, against what ``promises`` says it gets."""
    uid = int(seen.get("uid", "-1"))
    if promises.job_uids is None:
        user = Finding("user", f"the agent's own ({promises.agent_uid})", str(uid), uid == promises.agent_uid)
    else:
        first, last = promises.job_uids
        wanted = str(first) if first == last else f"one of {first}-{last}"
        user = Finding("user", wanted, str(uid), first <= uid <= last)
    # Out of reach when Landlock confines the job, or it runs as another user than the file's (mode 0600).
    kept = promises.confined or promises.job_uids is not None
    findings = [
        user,
        Finding("no new privileges", "1", seen.get("no_new_privs", "?"), seen.get("no_new_privs") == "1"),
        _finding("reads a file kept as the credential", "denied" if kept else "read", seen.get("credential")),
        _finding("sees the agent's process", "hidden" if promises.hides_processes else "seen", seen.get("agent")),
        _finding("reads its /proc", "readable", seen.get("proc")),
        _finding("writes /dev/shm", "writable", seen.get("shm")),
        _finding(
            "its /tmp",
            "its own" if promises.own_tmp else "the machine's",
            "the machine's" if seen.get("tmp") == machine_tmp else "its own" if seen.get("tmp") else None,
        ),
    ]
    cgroup = seen.get("cgroup") or "?"
    in_own = f"/{cgroups.PREFIX}" in cgroup  # below the agent's cgroup directory (fog_agent.cgroups)
    expected = "its own, below the agent's" if promises.own_cgroup else "none of the agent's"
    findings.append(Finding("cgroup", expected, cgroup, in_own == promises.own_cgroup))
    if promises.isolates_network:
        what = 'network "none": this machine\'s localhost'
        if seen.get("network") == NOT_TRIED:
            findings.append(Finding(what, "unreachable", NOT_TRIED, holds=True))
        else:
            findings.append(_finding(what, "unreachable", seen.get("network")))
    return findings


def _finding(what: str, expected: str, seen: str | None) -> Finding:
    return Finding(what, expected, seen or "?", seen == expected)


async def look(sandbox: Sandbox, secret: Path) -> list[dict[str, str]]:
    """Run the jobs; what each looking job printed, ``key=value`` a line, with what the network job found.

    The looking job runs twice: the first starts from a process the sandbox made as it started, the second from
    one made ahead while the first ran, as most jobs start; what the one gets, the other must get too."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)  # never accepted: a connection that completes is what counts
        env = {"SECRET": str(secret), "AGENT": str(os.getpid()), "PORT": str(server.getsockname()[1])}
        looks = [await _run(sandbox, name, "host", ("sh", "-c", _LOOK), env) for name in ("look", "look-again")]
        network = {}
        if "none" in sandbox.networks:
            if shutil.which("bash"):  # its /dev/tcp connects without another program
                network = await _run(sandbox, "reach", "none", ("bash", "-c", _REACH), env)
            else:
                network = {"network": NOT_TRIED}
        return [{**seen, **network} for seen in looks]


async def _run(
    sandbox: Sandbox, name: str, network: Network, command: tuple[str, ...], env: dict[str, str]
) -> dict[str, str]:
    assignment = Assignment(f"fog-agent-check-{name}", 1, command, env, TIMEOUT_S, Resources(), network=network)
    result = await sandbox.job(assignment).run()
    if result.outcome != "succeeded":
        raise SandboxError(f"the {name} job {result.outcome}: {result.error or result.output.strip()}")
    return {key: value for key, equals, value in (line.partition("=") for line in result.output.splitlines()) if equals}


def assess_each(promises: Promises, looks: list[dict[str, str]], machine_tmp: str) -> list[Finding]:
    """``assess`` of each look: a finding holds only where it held for every one (the first that did not, else)."""
    assessed = [assess(promises, seen, machine_tmp) for seen in looks]
    return [next((f for f in each if not f.holds), each[0]) for each in zip(*assessed, strict=True)]


def check(
    state_dir: StateDirOption = None,
    work_dir: WorkDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON")] = False,
) -> None:
    """Try what a job gets on this machine with real jobs, as `fog-agent run` would run them; exit 1 if the sandbox
    does not hold what its settings promise."""
    directory = state_dir or default_state_dir()
    try:
        sandbox = sandbox_from_env(work_dir or directory / "work")
    except SandboxError as exc:
        raise typer.Exit(fail(f"cannot run jobs: {exc}")) from None
    except OSError as exc:
        raise typer.Exit(fail(f"cannot prepare the work directory: {exc.strerror or exc}")) from None
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    secrets = Path(tempfile.mkdtemp(prefix="check-", dir=directory))  # 0700, as the state directory is
    try:
        secret = secrets / "credential"
        secret.write_text("not a credential")
        secret.chmod(0o600)
        looks = asyncio.run(_look_and_close(sandbox, secret))
    finally:
        shutil.rmtree(secrets)
    machine_tmp = os.stat("/tmp")  # noqa: S108 -- the machine's, to tell a job's own from it
    findings = assess_each(Promises.of(sandbox), looks, f"{machine_tmp.st_dev}:{machine_tmp.st_ino}")
    if as_json:
        typer.echo(json.dumps([asdict(finding) for finding in findings]))
    else:
        width = max(len(finding.what) for finding in findings)
        for finding in findings:
            mark = "ok  " if finding.holds else "FAIL"
            typer.echo(f"{mark} {finding.what:<{width}}  {finding.seen} (expected: {finding.expected})")
    if not all(finding.holds for finding in findings):
        raise typer.Exit(1)


async def _look_and_close(sandbox: Sandbox, secret: Path) -> list[dict[str, str]]:
    try:
        return await look(sandbox, secret)
    finally:
        await sandbox.close()
        await sandbox.removals.finished()
        await sandbox.remove_cgroups()
