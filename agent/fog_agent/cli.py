"""What the ``fog-agent`` commands share: the state directory option, logging, and how a failure is reported."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

#: exit statuses: 1 = failed (see stderr), 2 = bad usage (typer's), 3 = the gateway refuses this node for good
EXIT_FAILED = 1

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="FOG_AGENT_STATE_DIR",
        help="Where the node's state (and credential) lives (default: ~/.local/state/fog-agent)",
        show_default=False,
    ),
]


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP request says nothing the agent's own lines do not, and httpcore's debug lines carry headers.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def fail(message: str) -> int:
    typer.echo(message, err=True)
    return EXIT_FAILED
