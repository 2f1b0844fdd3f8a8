"""``fogctl api-key create|list|revoke``: the API keys a user's scripts and agents sign in with.

A key is created from a logged-in session (a key cannot mint keys); its secret is shown once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from fog_client import ApiKey
from fogctl import account
from fogctl.formats import JsonOption, parse_duration, print_table, when

app = typer.Typer(no_args_is_help=True, help="API keys: credentials for scripts and `fog-agent join --api-key`.")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. ci or my-node", show_default=False)],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A role the key may use (user, provider, admin); repeat for several"),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="The key stops working after this long: 90d, 12h, 2w")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; its secret is printed alone on stdout, this once (it is stored only as a hash)."""
    expires_at = datetime.now(UTC) + parse_duration(expires_in, "--expires-in") if expires_in else None
    scopes = scope or ["user"]
    created = account.with_saved_session(lambda client: client.create_api_key(name, scopes, expires_at=expires_at))
    if as_json:
        typer.echo(json.dumps({**created.model_dump(mode="json"), "key": created.key}))
        return
    expiry = f", expires {when(created.expires_at)}" if created.expires_at else ""
    account.console.print(
        f"Created API key {created.id} ({created.name}; {', '.join(created.scopes)}{expiry}). "
        "Its secret, shown this once:",
        markup=False,
    )
    typer.echo(created.key)  # alone on stdout: KEY=$(fogctl api-key create ci)


@app.command("list")
def list_keys(as_json: JsonOption = False) -> None:
    """Your API keys, revoked ones included (never their secrets)."""
    keys = account.with_saved_session(lambda client: client.list_api_keys())
    if as_json:
        typer.echo(json.dumps({"items": [key.model_dump(mode="json") for key in keys]}))
    else:
        print_table(key_table(keys))


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (not its secret)", show_default=False)]) -> None:
    """Revoke a key: it stops working at once."""
    account.with_saved_session(lambda client: client.revoke_api_key(key_id))
    account.console.print(f"Revoked API key {key_id}.", markup=False)


def key_table(keys: list[ApiKey]) -> Table:
    table = Table("id", "name", "scopes", "created", "expires", "last used", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            ", ".join(key.scopes),
            when(key.created_at),
            when(key.expires_at, "never"),
            when(key.last_used_at, "never"),
            when(key.revoked_at),
            style="dim" if key.revoked_at else None,
        )
    return table
