"""``fogctl status``: is the whole platform in order? Every service and each of its replicas (admins only).

It exits 1 when a service has no replica answering, or a replica's check is not ``ok`` (a dependency
unreachable, migrations pending, a background task ended): a script or a person at 3 a.m. learns at once.
"""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from fog_client import PlatformStatus, ReplicaStatus
from fogctl import account
from fogctl.formats import JsonOption, print_table

OK = "ok"


def status(as_json: JsonOption = False) -> None:
    """Every service and each replica that answered: its checks and what it leads; exit 1 unless all is in order."""
    platform = account.with_saved_session(lambda client: client.platform_status())
    if as_json:
        typer.echo(json.dumps(platform.model_dump(mode="json")))
    else:
        print_table(status_table(platform))
    if not platform.ok:
        raise typer.Exit(1)


def status_table(platform: PlatformStatus) -> Table:
    table = Table("service", "replica", "checks", "facts")
    for service in platform.services:
        if not service.replicas:
            table.add_row(escape(service.service), "[red]none answered[/]", "", "")
        for replica in service.replicas:
            table.add_row(escape(service.service), escape(replica.replica), _checks(replica), escape(_facts(replica)))
    return table


def _checks(replica: ReplicaStatus) -> str:
    failing = {name: value for name, value in replica.checks.items() if value != OK}
    if not failing:
        return "[green]ok[/]"
    return "\n".join(f"[red]{escape(name)}: {escape(value)}[/]" for name, value in failing.items())


def _facts(replica: ReplicaStatus) -> str:
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in replica.facts.items())
