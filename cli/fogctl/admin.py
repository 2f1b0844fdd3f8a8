"""``fogctl admin users|roles|disable|rotate-signing-key``: accounts and signing keys (admins only)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fog_client import User
from fogctl import account
from fogctl.formats import JsonOption, when

app = typer.Typer(no_args_is_help=True, help="Accounts and signing keys (admin).")

UserIdArgument = Annotated[str, typer.Argument(help="The user's id", show_default=False)]


@app.command()
def users(
    limit: Annotated[int, typer.Option(help="At most this many, oldest first", min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many first (the next page)", min=0)] = 0,
    as_json: JsonOption = False,
) -> None:
    """The accounts, oldest first, a page at a time."""
    page = account.with_saved_session(lambda client: client.list_users(limit=limit, offset=offset))
    if as_json:
        typer.echo(json.dumps({"items": [user.model_dump(mode="json") for user in page]}))
        return
    Console(highlight=False).print(user_table(page))  # made here: it takes its width from $COLUMNS
    if len(page) == limit:
        account.console.print(f"More may follow: --offset {offset + limit}", markup=False)


@app.command()
def roles(
    user_id: UserIdArgument,
    role: Annotated[list[str], typer.Argument(help="Every role the user is to have: user, provider, admin")],
) -> None:
    """Replace a user's roles. Their sessions end, so their next tokens carry the new roles."""
    user = account.with_saved_session(lambda client: client.set_roles(user_id, role))
    account.console.print(f"{user.email} ({user.id}) now has: {', '.join(user.roles) or 'no role'}.", markup=False)


@app.command()
def disable(user_id: UserIdArgument) -> None:
    """Disable an account: it cannot log in, and its sessions and API keys stop working."""
    user = account.with_saved_session(lambda client: client.disable_user(user_id))
    account.console.print(f"Disabled {user.email} ({user.id}).", markup=False)


@app.command("rotate-signing-key")
def rotate_signing_key() -> None:
    """Sign new tokens with a new key; the old one verifies the tokens it signed until they expire."""
    rotated = account.with_saved_session(lambda client: client.rotate_signing_key())
    account.console.print(f"Tokens are now signed with key {rotated.kid}.", markup=False)


def user_table(page: list[User]) -> Table:
    table = Table("id", "email", "roles", "disabled", "created")
    for user in page:
        table.add_row(
            user.id,
            user.email,
            ", ".join(user.roles) or "-",
            "yes" if user.disabled else "no",
            when(user.created_at),
            style="dim" if user.disabled else None,
        )
    return table
