"""``fogctl node list|get|label|drain|resume|deregister``: the nodes a provider owns (an admin: all of them).

Calls go out with the saved session (``fogctl login``), refreshed like ``fogctl whoami`` does.
"""

from __future__ import annotations

import json
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from fog_client import Contribution, Node
from fogctl import account
from fogctl.formats import JsonOption, human_bytes, print_table, when

app = typer.Typer(no_args_is_help=True, help="Nodes: the machines that run jobs.")
T = TypeVar("T")
NEVER = "never"  # a heartbeat, say, that never came

NodeIdArgument = Annotated[str, typer.Argument(help="The node's id", show_default=False)]


@app.command("list")
def list_nodes(
    status: Annotated[
        str | None, typer.Option(help="Only nodes in this status: ready, suspect, down, draining, deregistered")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="key=value; repeat to require several")] = None,
    as_json: JsonOption = False,
) -> None:
    """Your nodes (every node, for an admin)."""
    labels = parse_labels(label or [])
    nodes = account.with_saved_session(lambda client: client.list_nodes(status=status, labels=labels))
    if as_json:
        typer.echo(json.dumps({"items": [node.model_dump(mode="json") for node in nodes]}))
    else:
        print_table(node_table(nodes))


@app.command()
def get(node_id: NodeIdArgument, as_json: JsonOption = False) -> None:
    """One node: capabilities, labels, usage and status."""
    node = account.with_saved_session(lambda client: client.get_node(node_id))
    if as_json:
        typer.echo(json.dumps(node.model_dump(mode="json")))
        return
    for name, value in node_rows(node).items():
        typer.echo(f"{name:<17} {value}")


@app.command()
def drain(node_id: NodeIdArgument) -> None:
    """Give the node no new work; what it runs may finish."""
    node = account.with_saved_session(lambda client: client.drain_node(node_id))
    account.console.print(f"Node {node.id} ({node.name}) is {node.status}.", markup=False)


@app.command()
def label(
    node_id: NodeIdArgument,
    changes: Annotated[
        list[str], typer.Argument(help="key=value sets a label, key- removes it (as kubectl label)", show_default=False)
    ],
) -> None:
    """Change the node's labels; the others stay. Jobs are placed by the new ones from then on."""
    patch = parse_label_changes(changes)
    node = account.with_saved_session(lambda client: client.label_node(node_id, patch))
    shown = ", ".join(f"{key}={value}" for key, value in node.labels.items()) or "none"
    account.console.print(f"Node {node.id} ({node.name}) labels: {shown}", markup=False)


def parse_label_changes(values: list[str]) -> dict[str, str | None]:
    """``key=value`` to set, ``key-`` to remove."""
    patch: dict[str, str | None] = {}
    for value in values:
        if "=" not in value and value.endswith("-") and len(value) > 1:
            patch[value[:-1]] = None
            continue
        key, equals, text = value.partition("=")
        if not equals or not key:
            raise typer.BadParameter(f"{value!r} is neither key=value nor key-", param_hint="CHANGES")
        patch[key] = text
    return patch


@app.command()
def resume(node_id: NodeIdArgument) -> None:
    """End the node's drain: it takes new work again."""
    node = account.with_saved_session(lambda client: client.resume_node(node_id))
    account.console.print(f"Node {node.id} ({node.name}) is {node.status}.", markup=False)


@app.command()
def deregister(node_id: NodeIdArgument) -> None:
    """Remove the node for good; its credential stops working at once."""
    account.with_saved_session(lambda client: client.deregister_node(node_id))
    account.console.print(f"Deregistered node {node_id}; its credential no longer works.", markup=False)


def parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, equals, text = value.partition("=")
        if not equals or not key:
            raise typer.BadParameter(f"{value!r} is not key=value", param_hint="--label")
        labels[key] = text
    return labels


def node_table(nodes: list[Node]) -> Table:
    table = Table("id", "name", "status")
    for number in ("cores", "memory"):
        table.add_column(number, justify="right")
    table.add_column("region")
    table.add_column("reputation", justify="right")
    table.add_column("jobs run", justify="right")
    table.add_column("last heartbeat")
    table.add_column("agent")
    for node in nodes:
        table.add_row(
            node.id,
            node.name,
            node.status,
            str(node.capabilities.cpu_cores),
            human_bytes(node.capabilities.memory_bytes),
            node.region or "-",
            f"{node.reputation:.2f}",
            str(node.contribution.attempts_succeeded + node.contribution.attempts_failed),
            when(node.last_heartbeat_at, NEVER),
            _version(node.agent),
            style="dim" if node.status in ("down", "deregistered") else None,
        )
    return table


def _version(agent: str | None) -> str:
    """``fog-agent/0.4.0`` as ``0.4.0`` (the column says whose), another agent's name whole."""
    if agent is None:
        return "-"
    name, _, version = agent.partition(" ")[0].partition("/")
    return version if name == "fog-agent" and version else agent


def contributed(given: Contribution) -> str:
    """What a node gave, in words: its attempts by outcome, then its hours of run and CPU time."""
    ended = given.attempts_succeeded + given.attempts_failed
    if not ended and not given.attempts_lost:
        return "no job yet"
    lost = f", {given.attempts_lost} lost" if given.attempts_lost else ""
    return (
        f"{ended} attempt{'' if ended == 1 else 's'} ran ({given.attempts_succeeded} succeeded, "
        f"{given.attempts_failed} failed{lost}): {_hours(given.run_s)} run, {_hours(given.cpu_s)} of CPU"
    )


def _hours(seconds: float) -> str:
    if seconds >= 360:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def node_rows(node: Node) -> dict[str, str]:
    capabilities, usage, location = node.capabilities, node.usage, node.location
    gpus = [f"{gpu.model} ({human_bytes(gpu.memory_bytes)})" for gpu in capabilities.gpus]
    return {
        "id": node.id,
        "name": node.name,
        "owner_id": node.owner_id,
        "status": f"{node.status} since {when(node.status_changed_at, NEVER)}",
        "region": node.region or "-",
        "location": f"{location.lat}, {location.lon}" if location else "-",
        "cpu_cores": str(capabilities.cpu_cores),
        "memory": human_bytes(capabilities.memory_bytes),
        "disk_for_jobs": human_bytes(capabilities.disk_bytes),
        "platform": f"{capabilities.os} ({capabilities.arch})",
        "gpus": ", ".join(gpus) or "-",
        "job_networks": ", ".join(capabilities.networks),
        "agent": node.agent or "-",
        "labels": ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "-",
        "reputation": f"{node.reputation:.2f}",
        "running_jobs": str(node.running_jobs),
        "contributed": contributed(node.contribution),
        "usage": (
            f"cpu {usage.cpu_percent:.1f}%, memory {human_bytes(usage.memory_used_bytes)}, "
            f"disk {human_bytes(usage.disk_used_bytes)}"
            if usage
            else "-"
        ),
        "last_heartbeat": when(node.last_heartbeat_at, NEVER),
        "registered": when(node.registered_at, NEVER),
    }
