"""``fog-agent check``: real jobs in the sandbox ``fog-agent run`` would make here, and what they were seen to get
against what its settings promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fog_agent.__main__ import app
from fog_agent.check import Promises, assess, assess_each

MACHINE_TMP = "2049:12"
#: what a root agent's settings promise on a machine with everything
EVERYTHING = Promises(agent_uid=0, job_uids=(1000, 1999), confined=True, hides_processes=True, own_tmp=True,
                      own_cgroup=True, isolates_network=True)  # fmt: skip
SEEN = {"uid": "1500", "no_new_privs": "1", "credential": "denied", "agent": "hidden", "proc": "readable",
        "shm": "writable", "tmp": "2049:99", "cgroup": "/system.slice/fog-agent.10.1/11.2",
        "network": "unreachable"}  # fmt: skip


def test_a_sandbox_that_holds_its_promises_passes_every_finding() -> None:
    findings = assess(EVERYTHING, SEEN, MACHINE_TMP)
    assert [(f.what, f.holds) for f in findings] == [
        ("user", True), ("no new privileges", True), ("reads a file kept as the credential", True),
        ("sees the agent's process", True), ("reads its /proc", True), ("writes /dev/shm", True), ("its /tmp", True),
        ("cgroup", True),
        ('network "none": this machine\'s localhost', True),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("broken", "what"),
    [
        ({"uid": "0"}, "user"),
        ({"no_new_privs": "0"}, "no new privileges"),
        ({"credential": "read"}, "reads a file kept as the credential"),
        ({"agent": "seen"}, "sees the agent's process"),
        ({"proc": "unreadable"}, "reads its /proc"),
        ({"shm": "unwritable"}, "writes /dev/shm"),
        ({"tmp": MACHINE_TMP}, "its /tmp"),
        ({"cgroup": "/user.slice"}, "cgroup"),
        ({"network": "reached"}, 'network "none": this machine\'s localhost'),
        ({"network": ""}, 'network "none": this machine\'s localhost'),  # the job said nothing: not a pass
        ({"network": None}, 'network "none": this machine\'s localhost'),
    ],
)
def test_each_promise_broken_is_a_failed_finding(broken: dict[str, str | None], what: str) -> None:
    seen = {key: value for key, value in {**SEEN, **broken}.items() if value is not None}
    findings = assess(EVERYTHING, seen, MACHINE_TMP)
    assert [f.what for f in findings if not f.holds] == [what]


def test_what_is_promised_follows_the_settings() -> None:
    unprivileged = Promises(agent_uid=1000, job_uids=None, confined=False, hides_processes=False, own_tmp=False,
                            own_cgroup=False, isolates_network=False)  # fmt: skip
    seen = {"uid": "1000", "no_new_privs": "1", "credential": "read", "agent": "seen", "proc": "readable",
            "shm": "writable", "tmp": MACHINE_TMP, "cgroup": "/"}  # fmt: skip
    findings = assess(unprivileged, seen, MACHINE_TMP)
    assert all(f.holds for f in findings), findings
    assert [f.expected for f in findings] == [
        "the agent's own (1000)", "1", "read", "seen", "readable", "writable", "the machine's", "none of the agent's"
    ]  # fmt: skip


def test_a_finding_holds_only_if_it_held_for_every_look() -> None:
    later = {**SEEN, "uid": "1501", "proc": "unreadable"}  # a job from a spare made ahead, say
    findings = assess_each(EVERYTHING, [SEEN, later], MACHINE_TMP)
    assert [(f.what, f.seen) for f in findings if not f.holds] == [("reads its /proc", "unreadable")]
    assert all(f.holds for f in assess_each(EVERYTHING, [SEEN, {**SEEN, "uid": "1501"}], MACHINE_TMP))


def test_the_command_runs_real_jobs_and_exits_0_when_every_promise_holds(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", "--state-dir", str(tmp_path / "state"), "--json"])
    assert result.exit_code == 0, result.output
    findings = json.loads(result.stdout)
    assert all(f["holds"] for f in findings), findings
    assert [f["what"] for f in findings][:3] == ["user", "no new privileges", "reads a file kept as the credential"]
    assert list((tmp_path / "state").iterdir()) == [tmp_path / "state" / "work"], "its file and its jobs are gone"
    assert list((tmp_path / "state" / "work").iterdir()) == []


def test_settings_the_agent_refuses_are_refused_here_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOG_AGENT_JOB_NETWORKS", "bridge")
    result = CliRunner().invoke(app, ["check", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "cannot run jobs: FOG_AGENT_JOB_NETWORKS='bridge'" in result.stderr
