"""``fogctl password change|reset``: a new password for your account, from a session or with an admin's token."""

from __future__ import annotations

from typing import Annotated

import typer

from fogctl import account, session
from fogctl.session import SessionError

app = typer.Typer(no_args_is_help=True, help="Your password: change it, or set a new one with a reset token.")

StdinOption = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the passwords from standard input, one a line, for scripts"),
]


@app.command()
def change(password_stdin: StdinOption = False) -> None:
    """Change your password (the current one first, then the new one). This session stays signed in; every
    other session of yours (other shells, devices) ends. API keys keep working: revoke them apart."""
    current = account.read_password(password_stdin, "Current password")
    new = account.read_new_password(password_stdin, "New password")
    ended = account.with_saved_session(lambda client: client.change_password(current, new))
    account.console.print(
        f"Password changed; {_sessions(ended, 'other session')} ended (this one stays).", markup=False
    )


@app.command()
def reset(
    token: Annotated[str, typer.Argument(help="The reset token (fogr_…) an admin gave you", show_default=False)],
    url: Annotated[
        str | None, typer.Option("--url", envvar="FOG_URL", help="The gateway (default: the saved session's)")
    ] = None,
    password_stdin: StdinOption = False,
) -> None:
    """Set a new password with a reset token an admin issued (`fogctl admin reset-password`). Every session of
    the account ends; log in again with the new password."""
    gateway = url or _saved_gateway() or account.DEFAULT_URL
    new = account.read_new_password(password_stdin, "New password")

    async def run() -> int:
        async with account.new_client(gateway) as client:
            return await client.reset_password(token, new)

    ended = account.call_gateway(gateway, run())
    account.console.print(
        f"Password set; {_sessions(ended, 'session')} of the account ended."
        f" Log in with it: fogctl login --url {gateway}",
        markup=False,
    )


def _sessions(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}" if count else f"no {what}"


def _saved_gateway() -> str | None:
    try:
        saved = session.Session.load()
    except SessionError:
        return None
    return saved.gateway_url if saved else None
