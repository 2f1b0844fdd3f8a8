"""``fog-agent run``: keep this node connected to its gateway until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from fog_agent.cli import StateDirOption, fail
from fog_agent.connection import AgentConnection
from fog_agent.state import NodeState, StateError, state_path
from fog_agent.usage import usage_of

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(state_dir: StateDirOption = None) -> None:
    """Connect to the gateway and heartbeat until SIGTERM or SIGINT (exit 0) or a refusal (exit 3)."""
    path = state_path(state_dir)
    try:
        state = NodeState.load(path)
    except StateError as exc:
        raise typer.Exit(fail(f"{exc}; `fog-agent join --force` replaces it")) from None
    if state is None:
        raise typer.Exit(fail(f"not joined yet (no {path}); run `fog-agent join` first"))
    try:
        connection = AgentConnection(state.gateway_url, state.node_id, state.credential, usage=usage_of(path.parent))
    except ValueError as exc:
        raise typer.Exit(fail(f"{path}: {exc}")) from None
    log.info("node %s (%s) starting", state.node_id, state.name)
    status = asyncio.run(serve(connection))
    if status:
        raise typer.Exit(status)  # the connection has logged why


async def serve(connection: AgentConnection) -> int:
    """Run the connection with SIGTERM and SIGINT turned into its ``stop()``."""
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        log.info("%s: draining and leaving", signum.name)
        connection.stop()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await connection.run()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
