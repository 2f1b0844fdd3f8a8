"""``fogctl admin users|user|roles|disable|enable|unlock|reset-password|rotate-signing-key``: accounts and
signing keys (admins only). A user is named by their id or their e-mail address."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from fog_client import FogClient, User
from fogctl import account
from fogctl.formats import JsonOption, parse_duration, print_table, when

app = typer.Typer(no_args_is_help=True, help="Accounts and signing keys (admin).")

T = TypeVar("T")
UserArgument = Annotated[str, typer.Argument(help="The user's id or e-mail address", show_default=False)]


def acting_on(user: str, act: Callable[[FogClient, str], Awaitable[T]]) -> T:
    """``act`` with the saved session, on the user named by id or address (``user_id_of``)."""

    async def run(client: FogClient) -> T:
        return await act(client, await user_id_of(client, user))

    return account.with_saved_session(run)


async def user_id_of(client: FogClient, user: str) -> str:
    """An address is looked up (an admin knows people by it); anything else is taken for an id."""
    if "@" not in user:
        return user
    found = await client.list_users(email=user)
    if not found:
        raise typer.Exit(account.fail(f"no account has the address {user}"))
    return found[0].id


@app.command()
def users(
    limit: Annotated[int, typer.Option(help="At most this many, oldest first", min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many first (the next page)", min=0)] = 0,
    email: Annotated[str | None, typer.Option(help="Only the account with this address (any case)")] = None,
    as_json: JsonOption = False,
) -> None:
    """The accounts, oldest first, a page at a time."""
    page = account.with_saved_session(lambda client: client.list_users(limit=limit, offset=offset, email=email))
    if as_json:
        typer.echo(json.dumps({"items": [user.model_dump(mode="json") for user in page]}))
        return
    print_table(user_table(page))
    if len(page) == limit:
        account.console.print(f"More may follow: --offset {offset + limit}", markup=False)


@app.command()
def roles(
    user: UserArgument,
    role: Annotated[list[str], typer.Argument(help="Every role the user is to have: user, provider, admin")],
) -> None:
    """Replace a user's roles. Their sessions end, so their next tokens carry the new roles."""

    changed = acting_on(user, lambda client, user_id: client.set_roles(user_id, role))
    account.console.print(
        f"{changed.email} ({changed.id}) now has: {', '.join(changed.roles) or 'no role'}.", markup=False
    )


@app.command()
def disable(user: UserArgument) -> None:
    """Disable an account: it cannot log in, and its sessions and API keys stop working."""

    disabled = acting_on(user, lambda client, user_id: client.disable_user(user_id))
    account.console.print(f"Disabled {disabled.email} ({disabled.id}).", markup=False)


@app.command()
def user(user: UserArgument, as_json: JsonOption = False) -> None:
    """One account: roles, whether it is disabled or locked out (and until when), last login, password change."""

    found = acting_on(user, lambda client, user_id: client.get_user(user_id))
    if as_json:
        typer.echo(json.dumps(found.model_dump(mode="json")))
        return
    for label, value in user_rows(found).items():
        typer.echo(f"{label:<16} {value}")


@app.command()
def unlock(user: UserArgument) -> None:
    """End an account's lockout after too many wrong passwords: it may log in again at once."""

    unlocked = acting_on(user, lambda client, user_id: client.unlock_user(user_id))
    account.console.print(f"Unlocked {unlocked.email} ({unlocked.id}).", markup=False)


@app.command()
def enable(user: UserArgument) -> None:
    """Enable a disabled account: it may log in again, and its API keys and node credentials that were not
    revoked work again."""

    enabled = acting_on(user, lambda client, user_id: client.enable_user(user_id))
    account.console.print(f"Enabled {enabled.email} ({enabled.id}).", markup=False)


@app.command("reset-password")
def reset_password(
    user: UserArgument,
    expires_in: Annotated[
        str, typer.Option("--expires-in", help="The token works this long: 30m, 12h, 3d at most")
    ] = "1h",
    as_json: JsonOption = False,
) -> None:
    """A one-time token for a user who forgot their password, printed alone on stdout, this once: hand it to
    them (Fog sends no mail); they run `fogctl password reset TOKEN`. It replaces any earlier one."""
    seconds = int(parse_duration(expires_in, "--expires-in").total_seconds())

    issued = acting_on(user, lambda client, user_id: client.issue_password_reset(user_id, expires_in_s=seconds))
    if as_json:
        typer.echo(json.dumps({**issued.model_dump(mode="json"), "token": issued.token}))
        return
    account.console.print(
        f"Password reset for {issued.email} ({issued.user_id}), until {when(issued.expires_at)}; they run "
        "`fogctl password reset TOKEN`. The token, shown this once:",
        markup=False,
    )
    typer.echo(issued.token)


@app.command("rotate-signing-key")
def rotate_signing_key() -> None:
    """Sign new tokens with a new key; the old one verifies the tokens it signed until they expire."""
    rotated = account.with_saved_session(lambda client: client.rotate_signing_key())
    account.console.print(f"Tokens are now signed with key {rotated.kid}.", markup=False)


def user_rows(found: User) -> dict[str, str]:
    locked = found.locked_until is not None and found.locked_until > datetime.now(UTC)
    return {
        "id": found.id,
        "email": found.email,
        "roles": ", ".join(found.roles) or "-",
        "disabled": "yes" if found.disabled else "no",
        "locked": f"until {when(found.locked_until)}" if locked else "no",
        "failed_logins": f"{found.failed_logins} in a row",
        "last_login": when(found.last_login_at, "never"),
        "password_changed": when(found.password_changed_at, "never"),
        "created": when(found.created_at),
    }


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
