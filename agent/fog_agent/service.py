"""``fog-agent service``: the systemd unit that keeps this node's agent running.

``fog-agent run`` stays in the foreground. A machine offered for good wants it started at boot, started again when
it fails, and stopped as it should be: SIGTERM to the agent alone, which drains (running jobs may finish) and says
goodbye, with time for that before systemd kills what is left. The unit says so, for the node this machine joined as:

    fog-agent service | sudo tee /etc/systemd/system/fog-agent.service
    sudo systemctl daemon-reload && sudo systemctl enable --now fog-agent

It is made from what ``run`` would use here: this ``fog-agent``, the state directory (where the credential is), the
work directory if one is given, the ``FOG_AGENT_*`` settings in the environment, and the user, when not root.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import typer

from fog_agent.cli import StateDirOption
from fog_agent.connection import DRAIN_TIMEOUT_S
from fog_agent.run import WorkDirOption, joined_state
from fog_agent.state import NodeState

#: exit statuses that starting again would not change: bad usage (2), refused for good by the gateway (3)
FINAL_EXITS = (2, 3)
#: how long systemd lets the agent stop: the drain, and a little more to say goodbye and kill the rest
STOP_TIMEOUT_S = int(DRAIN_TIMEOUT_S) + 30


def unit(
    executable: Sequence[str],
    state: NodeState,
    *,
    work_dir: Path | None = None,
    user: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The unit's text (pure): ``executable`` runs the node ``state`` describes, as ``user`` (None: root), with the
    ``FOG_AGENT_*`` settings of ``environ``."""
    command = [*executable, "run", "--state-dir", str(state.path.parent.absolute())]
    if work_dir is not None:
        command += ["--work-dir", str(work_dir.absolute())]
    settings = sorted(
        (key, value)
        for key, value in (environ or {}).items()
        if key.startswith("FOG_AGENT_") and key not in ("FOG_AGENT_STATE_DIR", "FOG_AGENT_WORK_DIR")
    )
    lines = [
        "[Unit]",
        f"Description=Fog node agent: {state.name} ({state.node_id}) for {state.gateway_url}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"ExecStart={shlex.join(command)}",
        *([f"User={user}"] if user else []),
        *(f"Environment={_quoted(f'{key}={value}')}" for key, value in settings),
        "Restart=on-failure",
        "RestartSec=5",
        "# 2: bad usage, 3: the gateway refuses this node for good (deregistered, its credential revoked)",
        f"RestartPreventExitStatus={' '.join(str(status) for status in FINAL_EXITS)}",
        "# SIGTERM to the agent alone: it drains (running jobs may finish), says goodbye and kills the rest itself",
        "KillMode=mixed",
        f"TimeoutStopSec={STOP_TIMEOUT_S}",
        "# each job gets a cgroup below the agent's",
        "Delegate=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _quoted(assignment: str) -> str:
    """An ``Environment=`` value as systemd reads it: double quotes, with ``\\`` and ``"`` escaped."""
    return '"' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service(state_dir: StateDirOption = None, work_dir: WorkDirOption = None) -> None:
    """Print a systemd unit that runs this node's agent at boot and restarts it if it fails:
    `fog-agent service | sudo tee /etc/systemd/system/fog-agent.service`, then `systemctl enable --now fog-agent`."""
    state = joined_state(state_dir)
    user = None if os.geteuid() == 0 else getpass.getuser()
    typer.echo(unit(_this_agent(), state, work_dir=work_dir, user=user, environ=os.environ), nl=False)


def _this_agent() -> list[str]:
    """This ``fog-agent``'s absolute path (a virtualenv's, say); else the interpreter running its module."""
    launched = Path(sys.argv[0])
    if launched.name == "fog-agent" and launched.exists():
        return [str(launched.absolute())]
    return [sys.executable, "-m", "fog_agent"]
