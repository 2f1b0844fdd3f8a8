"""``fogctl``: the root command; each group lives in its own module."""

import typer

from fogctl import account, chat, dev, events, jobs, nodes, status

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fog's command line.")
app.command()(account.login)
app.command()(account.whoami)
app.command()(account.logout)
app.command()(status.status)
app.add_typer(dev.app, name="dev")
app.add_typer(nodes.app, name="node")
app.add_typer(jobs.app, name="job")
app.add_typer(events.app, name="events")
app.add_typer(chat.app, name="chat")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
