"""``fogctl job array show|cancel|wait``: a job array as a whole (``fogctl job submit --array N`` prints its id)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fog_client import ArraySummary
from fogctl import account
from fogctl.formats import JsonOption, when

app = typer.Typer(no_args_is_help=True, help="Job arrays: how far one has got; cancel it, or wait for it.")
ArrayIdArgument = Annotated[
    str, typer.Argument(help="The array's id (`fogctl job submit --array N` prints it)", show_default=False)
]
#: how often `wait` asks the gateway about the array (module level: tests set it to 0)
POLL_S = 1.0
#: the order statuses are shown in: the way a job goes, then how it ended
STATUSES = ("pending", "assigned", "running", "lost", "succeeded", "failed", "timed_out", "cancelled")


@app.command()
def show(array_id: ArrayIdArgument, as_json: JsonOption = False) -> None:
    """How many of the array's jobs are in each status."""
    summary = account.with_saved_session(lambda client: client.array_summary(array_id))
    print_summary(summary, as_json=as_json)


@app.command()
def cancel(array_id: ArrayIdArgument, as_json: JsonOption = False) -> None:
    """Cancel every job of the array that has not ended (a running one is killed on its node)."""
    summary = account.with_saved_session(lambda client: client.cancel_array(array_id))
    print_summary(summary, as_json=as_json)
    if summary.done:
        cancelled = summary.statuses.get("cancelled", 0)
        message = f"Every job of array {summary.array_id} has ended ({cancelled} cancelled)."
    else:  # a job held by its placement at that moment, for longer than the scheduler waits
        message = (
            f"{summary.count - summary.ended} jobs of array {summary.array_id} are still to be cancelled: ask again."
        )
    account.console.print(message, markup=False, soft_wrap=True)


@app.command()
def wait(array_id: ArrayIdArgument, as_json: JsonOption = False) -> None:
    """Wait until every job of the array has ended; exit 0 if they all succeeded, else 1."""
    summary = account.with_saved_session(lambda client: client.wait_array(array_id, poll_s=POLL_S))
    raise typer.Exit(report_end(summary, as_json=as_json))


def report_end(summary: ArraySummary, *, as_json: bool) -> int:
    """Show how the array ended; returns the exit status for fogctl: 0 only if every job succeeded."""
    print_summary(summary, as_json=as_json)
    return 0 if summary.all_succeeded else 1


def print_summary(summary: ArraySummary, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary.model_dump(mode="json")))
        return
    for name, value in summary_rows(summary).items():
        typer.echo(f"{name:<10} {value}")


def summary_rows(summary: ArraySummary) -> dict[str, str]:
    """The array, then its jobs per status in the order they go (a status no job is in is left out)."""
    known = [status for status in STATUSES if status in summary.statuses]
    others = sorted(set(summary.statuses) - set(STATUSES))  # a status newer than this fogctl
    return {
        "array": summary.array_id,
        "submitted": when(summary.submitted_at),
        "jobs": f"{summary.count} ({summary.ended} ended)",
        **{status: str(summary.statuses[status]) for status in [*known, *others]},
    }
