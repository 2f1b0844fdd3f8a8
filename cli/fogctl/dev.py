"""``fogctl dev up|down|status``: the whole platform on one machine."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fogctl.devstack import DevStack, StackState, default_dir, probe_ready
from fogctl.formats import print_table
from fogctl.session import login_and_save

app = typer.Typer(no_args_is_help=True, help="Run Fog locally: NATS, PostgreSQL and every service.")
console = Console(stderr=True)

DirOption = Annotated[Path | None, typer.Option("--dir", help="Data directory (default .fog/dev or $FOG_DEV_DIR)")]


@app.command()
def up(
    data_dir: DirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be ready")] = 60.0,
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between node heartbeats")] = 5.0,
    agents: Annotated[bool, typer.Option(help="Start two local agents as nodes of a dev provider")] = True,
) -> None:
    """Start everything and stay in the foreground; Ctrl-C (or `fogctl dev down`) stops it all."""
    stack = DevStack(data_dir, heartbeat_interval_s=heartbeat_interval)
    if stack.state_file.exists() and _alive(StackState.read(stack.state_file).supervisor_pid):
        raise typer.Exit(_fail(f"a dev stack already runs from {stack.dir}; `fogctl dev down` first"))
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        console.print(f"[bold]Starting Fog[/] in {stack.dir} …")
        stack.up()
        stack.wait_ready(timeout)
        _log_in_as_admin(stack)
        if agents:
            stack.start_agents()
        assert stack.state is not None
        stack.state.up = True
        stack.state.write(stack.state_file)
        _print_state(stack.state)
        console.print(
            f"\nFog is up. API: {stack.state.gateway_url}  (OpenAPI at /openapi.json)\n"
            "First job: fogctl job submit --wait -- echo hello\n"
            "Nodes: fogctl node list   Who am I: fogctl whoami\n"
            "Status: fogctl dev status --json   Stop: Ctrl-C or fogctl dev down"
        )
        next_liveness_probe = time.monotonic() + LIVENESS_EVERY_S
        while not stopping:
            for name, child in list(stack.agents.items()):
                if child.poll() is not None:
                    console.print(f"[yellow]{name} exited with {child.returncode}[/]; see {stack.logs / name}.log")
                    del stack.agents[name]
            if time.monotonic() >= next_liveness_probe:
                _stop_the_failing(stack)
                next_liveness_probe = time.monotonic() + LIVENESS_EVERY_S
            if not _restart_the_dead(stack):
                break
            time.sleep(0.5)  # the supervisor's watch interval, not test synchronisation
    except Exception as exc:
        console.print(f"[red]dev stack failed:[/] {exc}")
        stack.down()
        raise typer.Exit(1) from exc
    console.print("Stopping Fog …")
    stack.down()
    console.print("Stopped.")


@app.command()
def down(data_dir: DirOption = None, timeout: float = 30.0) -> None:
    """Stop the dev stack running from this data directory."""
    state_file = (data_dir or default_dir()) / "state.json"
    if not state_file.exists():
        console.print("No dev stack is running.")
        return
    pid = StackState.read(state_file).supervisor_pid
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
    # The supervisor removes the state file as its last act; a dead pid means it could not.
    deadline = time.monotonic() + timeout
    while state_file.exists() and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if state_file.exists() and _alive(pid):
        raise typer.Exit(_fail(f"supervisor {pid} still running after {timeout:g}s"))
    state_file.unlink(missing_ok=True)
    console.print("Stopped.")


@app.command()
def status(
    data_dir: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Every process of the dev stack: URL, pid, readiness, log file."""
    state_file = (data_dir or default_dir()) / "state.json"
    if not state_file.exists():
        if as_json:
            typer.echo(json.dumps({"running": False, "processes": []}))
        else:
            console.print("No dev stack is running.")
        raise typer.Exit(1)
    state = StackState.read(state_file)
    for proc in state.processes:
        proc.ready = _alive(proc.pid) and probe_ready(proc.url)
    running = _alive(state.supervisor_pid)
    if as_json:
        typer.echo(json.dumps({"running": running, **asdict(state)}, indent=2))
    else:
        _print_state(state)
    if not running:
        raise typer.Exit(1)


#: a service that keeps dying is not restarted forever: the stack stops instead
MAX_RESTARTS = 5
#: how often the supervisor asks each service's ``/healthz``, as Kubernetes' liveness probe does
LIVENESS_EVERY_S = 10.0


def _stop_the_failing(stack: DevStack) -> None:
    """Stop the services that say a background loop of theirs ended; ``_restart_the_dead`` starts them again."""
    for name in stack.stop_the_failing():
        console.print(f"[yellow]{name} failed its liveness probe[/]; stopped it (see {stack.logs / name}.log)")


def _restart_the_dead(stack: DevStack) -> bool:
    """Restart services that exited; False (stop everything) once one has died too often."""
    for name, child in list(stack.children.items()):
        if child.poll() is None:
            continue
        if stack.restarts.get(name, 0) >= MAX_RESTARTS:
            console.print(f"[red]{name} keeps exiting[/]; see {stack.logs / name}.log. Stopping.")
            return False
        console.print(f"[yellow]{name} exited with {child.returncode}[/]; restarting it (see {stack.logs / name}.log)")
        stack.restart(name)
    return True


def _log_in_as_admin(stack: DevStack) -> None:
    """Log fogctl in as the first admin, so `fogctl whoami` works at once."""
    assert stack.state is not None
    admin = stack.admin()
    try:
        session = login_and_save(stack.state.gateway_url, admin["email"], admin["password"])
    except Exception as exc:  # the stack is still usable; say why fogctl is not logged in
        console.print(f"[yellow]could not log fogctl in as {admin['email']}:[/] {exc}")
        return
    console.print(
        f"fogctl is logged in as the first admin, {admin['email']} ({session.path}).\n"
        f"Its password is in {stack.admin_file} (readable only by you)."
    )


def _print_state(state: StackState) -> None:
    table = Table("process", "ready", "pid", "url", "log")
    for proc in state.processes:
        table.add_row(proc.name, "[green]yes[/]" if proc.ready else "[red]no[/]", str(proc.pid), proc.url, proc.log)
    print_table(table)
    if state.gateway_metrics_url:
        Console().print(f"Gateway metrics (apart from its API): {state.gateway_metrics_url}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail(message: str) -> int:
    console.print(f"[red]{message}[/]")
    return 1
