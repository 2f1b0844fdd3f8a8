"""``fogctl``: the root command; each group lives in its own module."""

from typing import Annotated

import typer

from fogctl import __version__, account, admin, chat, dev, events, jobs, keys, nodes, password, sessions, status

app = typer.Typer(no_args_is_help=True, help="Fog's command line.")


def _show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"fogctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", help="Print fogctl's version and exit", callback=_show_version, is_eager=True)
    ] = False,
) -> None:
    """Fog's command line."""


app.command()(account.register)
app.command()(account.login)
app.command()(account.whoami)
app.command()(account.logout)
app.command()(status.status)
app.add_typer(dev.app, name="dev")
app.add_typer(nodes.app, name="node")
app.add_typer(jobs.app, name="job")
app.add_typer(events.app, name="events")
app.add_typer(chat.app, name="chat")
app.add_typer(password.app, name="password")
app.add_typer(sessions.app, name="session")
app.add_typer(keys.app, name="api-key")
app.add_typer(admin.app, name="admin")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
