"""``fog-agent service``: the systemd unit for the node this machine joined as, checked by systemd's own parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fog_agent.__main__ import app
from fog_agent.connection import DRAIN_TIMEOUT_S
from fog_agent.service import STOP_TIMEOUT_S, unit
from fog_agent.state import FILE_NAME, NodeState


def joined(state_dir: Path) -> NodeState:
    state = NodeState("https://fog.example.org", "n-1", "edge-a", "fogn_secret", path=state_dir / FILE_NAME)
    state.save()
    return state


def test_the_unit_runs_this_node_restarts_it_on_failure_and_lets_it_drain(tmp_path: Path) -> None:
    state = joined(tmp_path / "state dir")
    environ = {"FOG_AGENT_DISK_RESERVE": "2G", "FOG_AGENT_JOB_READ_PATHS": 'a "b"', "FOG_AGENT_STATE_DIR": "x",
               "HOME": "/root", "FOG_API_KEY": "fogk_not_for_the_unit"}  # fmt: skip
    text = unit(["/opt/fog/bin/fog-agent"], state, work_dir=Path("/srv/jobs"), user="fog", environ=environ)
    lines = text.splitlines()
    assert f"ExecStart=/opt/fog/bin/fog-agent run --state-dir '{tmp_path}/state dir' --work-dir /srv/jobs" in lines
    assert "Description=Fog node agent: edge-a (n-1) for https://fog.example.org" in lines
    assert "User=fog" in lines
    # the agent's settings, quoted as systemd reads them; nothing else of the environment, no secret
    assert [line for line in lines if line.startswith("Environment=")] == [
        'Environment="FOG_AGENT_DISK_RESERVE=2G"', 'Environment="FOG_AGENT_JOB_READ_PATHS=a \\"b\\""'
    ]  # fmt: skip
    assert {"Restart=on-failure", "RestartPreventExitStatus=2 3", "KillMode=mixed", "Delegate=yes"} <= set(lines)
    assert f"TimeoutStopSec={STOP_TIMEOUT_S}" in lines
    assert STOP_TIMEOUT_S > DRAIN_TIMEOUT_S  # its jobs' drain fits before systemd kills what is left
    assert "fogn_secret" not in text  # the credential stays in the state directory
    assert unit(["fog-agent"], state).count("User=") == 0  # root's


def test_systemd_reads_the_printed_unit_without_a_complaint(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze on this machine")
    joined(tmp_path / "state")
    printed = CliRunner().invoke(app, ["service", "--state-dir", str(tmp_path / "state")])
    assert printed.exit_code == 0, printed.output
    unit_file = tmp_path / "fog-agent.service"
    unit_file.write_text(printed.stdout)
    checked = subprocess.run([analyze, "verify", str(unit_file)], capture_output=True, text=True, check=False)
    # A misspelt setting is only warned of (exit 0): a clean check says nothing at all.
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_a_machine_that_has_not_joined_gets_no_unit(tmp_path: Path) -> None:
    printed = CliRunner().invoke(app, ["service", "--state-dir", str(tmp_path / "state")])
    assert printed.exit_code == 1
    assert "not joined yet" in printed.stderr
    assert printed.stdout == ""
