"""``fog-agent``: join a gateway once, then run; each command lives in its own module."""

from typing import Annotated

import typer

from fog_agent import __version__, check, join, run, service
from fog_agent.cli import configure_logging

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fog's node agent: offers this machine to a Fog gateway as a node.\n\n"
    "Exit status: 0 done or stopped, 1 failed, 2 bad usage, 3 the gateway refuses this node for good.",
)
app.command()(join.join)
app.command()(run.run)
app.command()(check.check)
app.command()(service.service)


def _show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"fog-agent {__version__}")  # as the node shows it: fog-agent/<version>
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug lines too")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit", callback=_show_version, is_eager=True)
    ] = False,
) -> None:
    configure_logging(verbose)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
