"""``fogctl session list|end``: where you are logged in, and ending what you do not recognise."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from fog_client import Session
from fogctl import account
from fogctl.formats import JsonOption, print_table, when

app = typer.Typer(no_args_is_help=True, help="Your sessions: each login on a device or shell.")


@app.command("list")
def list_sessions(as_json: JsonOption = False) -> None:
    """Your sessions that can still be used, the latest active first; `*` marks this one."""
    found = account.with_saved_session(lambda client: client.sessions())
    if as_json:
        typer.echo(json.dumps({"items": [each.model_dump(mode="json") for each in found]}))
    else:
        print_table(session_table(found))


@app.command()
def end(
    session_id: Annotated[
        str | None, typer.Argument(help="The session's id (from `fogctl session list`)", show_default=False)
    ] = None,
    others: Annotated[bool, typer.Option("--others", help="Every session but this one")] = False,
) -> None:
    """End a session (its tokens stop working at once), or with --others every one but this."""
    if (session_id is None) == (not others):
        raise typer.BadParameter("name a session, or give --others (not both)")
    if others:
        ended = account.with_saved_session(lambda client: client.end_other_sessions())
        account.console.print(f"Ended {ended} other session{'' if ended == 1 else 's'}.", markup=False)
        return
    assert session_id is not None
    account.with_saved_session(lambda client: client.end_session(session_id))
    account.console.print(f"Ended session {session_id}.", markup=False)


def session_table(found: list[Session]) -> Table:
    table = Table("", "id", "from", "logged in", "last active")
    for each in found:
        table.add_row("*" if each.current else "", each.id, each.source or "?", when(each.created_at),
                      when(each.last_active_at))  # fmt: skip
    return table
