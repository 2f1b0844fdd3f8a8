"""``fogctl job submit|list|get|logs|cancel|explain|wait``: your jobs, with the saved session (``fogctl login``).
An array as a whole (``fogctl job array ...``) is in ``fogctl.arrays``.

``submit --wait`` and ``wait`` behave like running the job here: its output goes to stdout as captured, as it
comes, and the command exits with the job's exit code, so that scripts can use fogctl where they would run the
program. With ``--json`` they print the job and its whole output once it has ended.
"""

from __future__ import annotations

import base64
import enum
import json
import re
import shlex
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pydantic
import typer
from rich.console import Console
from rich.table import Table

from fog_client import Affinity, ArraySummary, Explanation, FogClient, Job, JobOutput, JobPage, JobSpec
from fogctl import account, arrays, job_specs
from fogctl.formats import JsonOption, human_bytes, parse_duration, print_table, when

app = typer.Typer(no_args_is_help=True, help="Jobs: commands run on the nodes.")
app.add_typer(arrays.app, name="array")
T = TypeVar("T")
#: how often a waiting command asks the gateway about its job (module level: tests set it to 0)
POLL_S = 0.5
#: a size: a number, then an optional binary unit (K, M, G, T; Ki/KiB/KB alike, as docker reads them)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|b)?", re.IGNORECASE)
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


class Network(enum.Enum):
    host = "host"
    none = "none"


JobIdArgument = Annotated[str, typer.Argument(help="The job's id", show_default=False)]


# A job's argv may hold options of its own (`-- python -m x`): once the command has begun, fogctl reads no
# more options, so that they all reach the job.
@app.command(context_settings={"allow_interspersed_args": False})
def submit(
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="CMD", help="The program and its arguments (no shell)", show_default=False),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait for the job; print its output, exit with its code."
            " With --array: wait for every job, print the array's summary, exit 0 only if all succeeded",
        ),
    ] = False,
    array: Annotated[int | None, typer.Option("--array", min=1, help="Submit N copies as one array")] = None,
    name: Annotated[str | None, typer.Option(help="A name to recognise the job by")] = None,
    cpu: Annotated[float | None, typer.Option("--cpu", help="CPU cores, may be fractional (default 1)")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory in binary units, e.g. 512M or 2G (default 256M)")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs (default 0)")] = None,
    disk: Annotated[
        str | None,
        typer.Option(
            help="The disk it may fill beneath its directory, e.g. 500M or 20G: placed where a node has that much"
            " for jobs, stopped if it writes more (default: none stated)"
        ),
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="k=v the node must have; repeatable")] = None,
    region: Annotated[str | None, typer.Option(help="The region the node must be in")] = None,
    arch: Annotated[str | None, typer.Option(help="The architecture the node must have, e.g. x86_64")] = None,
    affinity: Annotated[
        list[str] | None, typer.Option("--affinity", help="k=v:weight (1..100) a node scores more for; repeatable")
    ] = None,
    network: Annotated[
        Network | None,
        typer.Option(
            help="none: no network but loopback (on a node that can give a job one of its own); "
            "host: the node's network (default)"
        ),
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V in the job's environment; repeatable")] = None,
    priority: Annotated[int | None, typer.Option(help="0..100, higher first (default 50)")] = None,
    timeout: Annotated[
        str | None, typer.Option(help="How long an attempt may run: 90 (seconds), 10m, 2h (default 1h)")
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before giving up (default 3)")] = None,
    retry_backoff: Annotated[
        str | None,
        typer.Option(help="The pause before the second attempt, doubling for each one after: 30, 5m (default 1 s)"),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting again with the same key answers the first job")
    ] = None,
    file: Annotated[
        list[str] | None,
        typer.Option(
            "--file",
            help="LOCAL[:PATH]: a file of yours the job finds at PATH in its directory (default: LOCAL's name); "
            "repeatable, 512 KiB in all",
        ),
    ] = None,
    output: Annotated[
        list[str] | None,
        typer.Option(
            "--output",
            help="PATH in the job's directory to have back once it ended (`fogctl job download`); "
            "repeatable, 1 MiB in all",
        ),
    ] = None,
    after: Annotated[
        list[str] | None,
        typer.Option(
            "--after",
            help="ID of a job, or an array, of yours that must succeed first; repeatable. Should one end otherwise,"
            " this job is cancelled, never run",
        ),
    ] = None,
    after_any: Annotated[
        list[str] | None,
        typer.Option("--after-any", help="ID of a job, or an array, of yours that must end first, however; repeatable"),
    ] = None,
    spec_file: Annotated[
        str | None,
        typer.Option(
            "--spec",
            help="A file (YAML or JSON; - for stdin) with the job's spec, as `fogctl job get ID --json` shows it;"
            " the flags given with it win",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a command on a node: fogctl job submit [OPTIONS] -- CMD [ARGS]..."""
    memory_bytes = None if memory is None else parse_size(memory, "--memory")
    disk_bytes = None if disk is None else parse_size(disk, "--disk")
    constraints = {**_given(region=region, arch=arch), **({"labels": parse_pairs(label, "--label")} if label else {})}
    flags = _given(
        command=command or None,
        env=parse_pairs(env, "--env") if env else None,
        resources=_given(cpu_cores=cpu, memory_bytes=memory_bytes, gpus=gpus, disk_bytes=disk_bytes) or None,
        constraints=constraints or None,
        affinities=[parse_affinity(value).model_dump() for value in affinity] if affinity else None,
        network=None if network is None else network.value,
        priority=priority, timeout_s=_seconds(timeout, "--timeout"), max_attempts=max_attempts,
        retry_backoff_s=_seconds(retry_backoff, "--retry-backoff"),
        name=name, idempotency_key=idempotency_key,
        files=dict(read_job_file(each) for each in file) if file else None,
        outputs=output or None, after=after or None, after_any=after_any or None,
    )  # fmt: skip
    body = job_specs.merged(job_specs.load(spec_file) if spec_file else {}, flags)
    if not body.get("command") or not body["command"][0]:
        raise typer.BadParameter(
            "no command: give it after `--`, e.g. fogctl job submit -- echo hello", param_hint="CMD"
        )
    try:
        spec = JobSpec.model_validate(body)
    except pydantic.ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--spec") from None
    if array is not None:
        _submit_array(spec, array, wait=wait, as_json=as_json)
    elif wait:
        submitted = account.with_saved_session(lambda client: _submit(client, spec))
        _wait(submitted.id, as_json=as_json)
    else:
        job = account.with_saved_session(lambda client: client.submit_job(spec))
        typer.echo(json.dumps(job.model_dump(mode="json")) if as_json else job.id)


@app.command()
def files(job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """The files the job gave back of its --output paths (`fogctl job download` fetches one)."""
    found = account.with_saved_session(lambda client: client.job_files(job_id))
    if as_json:
        typer.echo(found.model_dump_json())
        return
    table = Table("path", "size", "attempt", "kept")
    for info in found.items:
        kept = "its beginning (the outputs' 1 MiB ran out)" if info.truncated else "whole"
        table.add_row(info.path, human_bytes(info.size), str(info.attempt), kept)
    print_table(table)
    if found.missing:
        account.console.print(f"Not left by the job: {', '.join(found.missing)}", markup=False, soft_wrap=True)
    elif not found.ended:
        account.console.print("The job has not ended: its files may still change.", markup=False, soft_wrap=True)


@app.command()
def download(
    job_id: JobIdArgument,
    path: Annotated[str, typer.Argument(help="The path, as --output named it", show_default=False)],
    to: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write it (default: its name, here; - for stdout)")
    ] = None,
) -> None:
    """Fetch a file the job gave back."""
    data = account.with_saved_session(lambda client: client.job_file(job_id, path))
    if to is not None and str(to) == "-":
        write_raw_bytes(data)
        return
    target = to or Path(path.rsplit("/", 1)[-1])
    target.write_bytes(data)
    account.console.print(f"Wrote {target} ({human_bytes(len(data))})", markup=False, soft_wrap=True)


@app.command()
def rerun(
    job_id: JobIdArgument,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the new job; print its output, exit with its code")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Submit a job again, as it was asked for: a new job with its spec (command, environment, resources,
    constraints, ...; a job of an array keeps its FOG_ARRAY_INDEX), whatever became of the first."""

    async def again(client: FogClient) -> Job:
        spec = (await client.get_job(job_id)).spec.model_copy(update={"idempotency_key": None})  # not the same job
        return await (_submit(client, spec) if wait else client.submit_job(spec))

    job = account.with_saved_session(again)
    if wait:
        _wait(job.id, as_json=as_json)
    typer.echo(json.dumps(job.model_dump(mode="json")) if as_json else job.id)


@app.command("list")
def list_jobs(
    status: Annotated[
        str | None,
        typer.Option(
            help="Only jobs in this status: pending, assigned, running, succeeded, failed, timed_out, cancelled"
        ),
    ] = None,
    array: Annotated[str | None, typer.Option("--array", help="Only the jobs of this array")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Only the jobs of this name (as submitted with --name)")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Jobs per page (default 100)")] = None,
    cursor: Annotated[str | None, typer.Option(help="Start at this page (a previous list's next cursor)")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursors to the last page")] = False,
    oldest_first: Annotated[bool, typer.Option("--oldest-first", help="The first submitted first")] = False,
    as_json: JsonOption = False,
) -> None:
    """Your jobs, the last submitted first, a page at a time (or all of them with --all)."""
    order: Literal["oldest", "newest"] = "oldest" if oldest_first else "newest"

    async def fetch(client: FogClient) -> JobPage:
        if not all_pages:
            return await client.list_jobs(
                status=status, array_id=array, name=name, limit=limit, cursor=cursor, order=order
            )
        jobs = client.iter_jobs(status=status, array_id=array, name=name, limit=limit, order=order)
        items = [job async for job in jobs]
        return JobPage(items=items)

    page = account.with_saved_session(fetch)
    if as_json:
        typer.echo(json.dumps(page.model_dump(mode="json")))
        return
    print_table(job_table(page.items))
    if page.next_cursor is not None:
        account.console.print(f"More jobs: --cursor {page.next_cursor} (or --all)", markup=False, soft_wrap=True)


@app.command()
def get(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    spec_only: Annotated[
        bool, typer.Option("--spec", help="Its spec alone, as YAML: what `fogctl job submit --spec FILE` takes")
    ] = False,
) -> None:
    """One job: its spec, progress and result."""
    job = account.with_saved_session(lambda client: client.get_job(job_id))
    if spec_only:
        typer.echo(job_specs.as_yaml(job.spec), nl=False)
        return
    if as_json:
        typer.echo(json.dumps(job.model_dump(mode="json")))
        return
    for name, value in job_rows(job).items():
        typer.echo(f"{name:<12} {value}")


FollowOption = Annotated[
    bool, typer.Option("--follow", "-f", help="Print what a running job prints as it comes, until it ends.")
]


@app.command()
def logs(job_id: JobIdArgument, follow: FollowOption = False) -> None:
    """The job's output (stdout and stderr interleaved), exactly as its node captured it."""
    if follow:
        account.with_saved_session(lambda client: _follow(client, job_id))
        return
    output = account.with_saved_session(lambda client: client.job_output(job_id))
    write_raw(output.output)
    _warn_if_truncated(output)


async def _follow(client: FogClient, job_id: str) -> None:
    """Print the job's output as it comes, until the job has ended."""
    attempt: int | None = None
    async for piece in client.follow_output(job_id, poll_s=POLL_S):
        if attempt is not None and piece.attempt != attempt:  # stderr: stdout is the job's alone
            account.console.print(f"--- attempt {piece.attempt} ---", markup=False)
        attempt = piece.attempt
        write_raw(piece.output)
        if piece.ended:
            _warn_if_truncated(piece)


@app.command()
def cancel(job_id: JobIdArgument) -> None:
    """Stop the job (a running one is killed on its node); an ended job stays as it is."""
    job = account.with_saved_session(lambda client: client.cancel_job(job_id))
    if job.status == "cancelled":
        message = f"Cancelled job {job.id}."
    elif job.ended:
        message = f"Job {job.id} had already ended ({job.status}): nothing to cancel."
    else:
        message = f"Cancelling job {job.id}: it is {job.status} until its node has stopped it."
    account.console.print(message, markup=False, soft_wrap=True)


@app.command()
def explain(job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Why the job runs where it does, or why it is still pending."""
    explanation = account.with_saved_session(lambda client: client.explain_job(job_id))
    if as_json:
        typer.echo(json.dumps(explanation.model_dump(mode="json")))
        return
    console = Console(highlight=False)
    for line in explanation_lines(explanation):
        console.print(line, markup=False, soft_wrap=True)
    if explanation.candidates:
        print_table(candidate_table(explanation.candidates))


@app.command()
def wait(job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Wait for the job to end, printing its output as it comes; exit with its exit code."""
    _wait(job_id, as_json=as_json)


# -- flags ---------------------------------------------------------------------------------------


def parse_size(text: str, option: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``1048576``: bytes, in binary units (memory is sold in GiB)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a size such as 512M or 2G", param_hint=option)
    number, unit = match.groups()
    power = _POWERS[unit.lower()] if unit else 0
    return int(Decimal(number) * 1024**power)  # Decimal: 1.1G is a whole number of bytes, not a float's guess


def parse_pairs(values: list[str], option: str) -> dict[str, str]:
    """``k=v`` each; the value may hold ``=`` itself (``--env URL=a?b=c``)."""
    pairs = {}
    for value in values:
        key, equals, text = value.partition("=")
        if not equals or not key:
            raise typer.BadParameter(f"{value!r} is not key=value", param_hint=option)
        pairs[key] = text
    return pairs


def parse_affinity(value: str) -> Affinity:
    """``k=v:weight``; the weight follows the last ``:``, so that the value may hold one (``zone=eu:1:20``)."""
    pair, colon, weight = value.rpartition(":")
    label, equals, text = pair.partition("=")
    if not (colon and equals and label and weight.isdigit()):
        raise typer.BadParameter(f"{value!r} is not key=value:weight", param_hint="--affinity")
    return Affinity(label=label, value=text, weight=int(weight))


def _seconds(given: str | None, option: str) -> float | int | None:
    """A duration flag in seconds, a whole number where it is one (as the flag once was)."""
    if given is None:
        return None
    seconds = parse_duration(given, option, bare_seconds=True).total_seconds()
    return int(seconds) if seconds.is_integer() else seconds


def _given(**values: object) -> dict[str, object]:
    """The flags that were given: the others keep the gateway's defaults (JobSpec's)."""
    return {key: value for key, value in values.items() if value is not None}


# -- waiting ---------------------------------------------------------------------------------------


async def _submit(client: FogClient, spec: JobSpec) -> Job:
    job = await client.submit_job(spec)
    # stderr: stdout is the job's alone; the id is what `fogctl job cancel` needs if this wait is interrupted
    first = f" It waits for {_jobs(job.waiting_for)} first." if job.waiting_for else ""
    account.console.print(f"Submitted job {job.id}; waiting for it to end.{first}", markup=False, soft_wrap=True)
    return job


def _wait(job_id: str, *, as_json: bool) -> None:
    """Wait for the job to end, as if it ran here; exits fogctl with the job's exit status."""
    if as_json:
        job, output = account.with_saved_session(lambda client: _wait_and_read(client, job_id))
        typer.echo(json.dumps({"job": job.model_dump(mode="json"), "output": output.model_dump(mode="json")}))
    else:
        job = account.with_saved_session(lambda client: _follow_to_the_end(client, job_id))
        if job.status != "succeeded":
            account.console.print(_ending(job), style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(exit_status(job))


async def _wait_and_read(client: FogClient, job_id: str) -> tuple[Job, JobOutput]:
    job = await client.wait_job(job_id, poll_s=POLL_S)
    return job, await client.job_output(job.id)


async def _follow_to_the_end(client: FogClient, job_id: str) -> Job:
    await _follow(client, job_id)
    return await client.wait_job(job_id, poll_s=POLL_S)  # it has ended: one read


def read_job_file(given: str) -> tuple[str, str]:
    """``LOCAL[:PATH]`` as a spec's file: its path in the job's directory, and the local file's content in base64."""
    local, _, path = given.partition(":")
    try:
        data = Path(local).read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {local!r}: {exc.strerror}", param_hint="--file") from None
    return path or Path(local).name, base64.b64encode(data).decode()


def exit_status(job: Job) -> int:
    """The job's exit code as a shell sees one; 1 for a job that failed without one (cancelled, timed out)."""
    if job.exit_code is None:
        return 0 if job.status == "succeeded" else 1
    # a negative code is a signal (as Python reports it): the shell says 128+N; and only 0..255 can be exited with
    status = (128 - job.exit_code if job.exit_code < 0 else job.exit_code) % 256
    if status == 0 and (job.exit_code != 0 or job.status != "succeeded"):
        return 1  # 256 wraps to 0: a failure must never read as a success
    return status


def write_raw(text: str) -> None:
    """Write the job's output as captured: no styling, no ANSI stripping (click.echo would), no newline added."""
    write_raw_bytes(text.encode("utf-8", "replace"))  # UTF-8 whatever the locale: the node decoded it as such


def write_raw_bytes(data: bytes) -> None:
    """Bytes on stdout, as they are (a job's output, a file it gave back)."""
    sys.stdout.flush()  # anything already written comes first
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a stream without bytes underneath (some test harnesses)
        sys.stdout.write(data.decode("utf-8", "replace"))
    else:
        buffer.write(data)
    sys.stdout.flush()


def _ending(job: Job) -> str:
    code = f" with exit code {job.exit_code}" if job.exit_code is not None else ""
    error = f": {job.error}" if job.error else ""
    return f"Job {job.id} {job.status}{code}{error}"


def _warn_if_truncated(output: JobOutput) -> None:
    if output.truncated:
        account.console.print("(the output was truncated: the node keeps its start only)", markup=False)


# -- display ---------------------------------------------------------------------------------------


def job_table(jobs: list[Job]) -> Table:
    table = Table("id", "name", "status", "node")
    table.add_column("attempt", justify="right")
    table.add_column("exit", justify="right")
    table.add_column("submitted")
    for job in jobs:
        table.add_row(
            job.id,
            job.name or "-",
            _status(job),
            job.node_id or "-",
            str(job.attempt),
            _or_dash(job.exit_code),
            when(job.submitted_at),
            style="dim" if job.status == "cancelled" else None,
        )
    return table


def _status(job: Job) -> str:
    """Its status; a pending job that waits for others says for how many (`fogctl job explain` names them)."""
    if job.status != "pending" or not job.waiting_for:
        return job.status
    return f"pending, waits for {_jobs(job.waiting_for)}"


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count > 1 else ''}"


def job_rows(job: Job) -> dict[str, str]:
    spec = job.spec
    resources, constraints = spec.resources, spec.constraints
    hard = [*sorted(constraints.labels.items()), ("region", constraints.region), ("arch", constraints.arch)]
    required = [f"{key}={value}" for key, value in hard if value is not None]
    return {
        "id": job.id,
        "name": job.name or "-",
        "status": _status(job),
        "array": f"{job.array_id} [{job.array_index}]" if job.array_id else "-",
        "command": shlex.join(spec.command),
        # names only: values are often secrets, and `--json` has them for whoever needs them
        "env": ", ".join(sorted(spec.env)) or "-",
        # paths and sizes: the contents are in `--json`, in base64
        "files": ", ".join(f"{path} ({human_bytes(len(base64.b64decode(data)))})" for path, data in spec.files.items())
        or "-",
        "outputs": ", ".join(spec.outputs) or "-",
        "after": ", ".join(spec.after) or "-",
        "after_any": ", ".join(spec.after_any) or "-",
        "resources": f"{resources.cpu_cores:g} CPU, {human_bytes(resources.memory_bytes)}, {resources.gpus} GPU"
        + (f", {human_bytes(resources.disk_bytes)} disk" if resources.disk_bytes else ""),
        "requires": ", ".join(required) or "-",
        "prefers": ", ".join(f"{a.label}={a.value} ({a.weight})" for a in spec.affinities) or "-",
        "network": spec.network or "host",
        "priority": str(spec.priority),
        "timeout": f"{spec.timeout_s:g} s",
        "node": job.node_id or "-",
        "attempt": f"{job.attempt} of {spec.max_attempts}",
        "exit_code": _or_dash(job.exit_code),
        "duration": f"{job.duration_s:.1f} s" if job.duration_s is not None else "-",
        "cpu_time": f"{job.cpu_s:.2f} s" if job.cpu_s is not None else "-",
        "max_memory": human_bytes(job.max_rss_bytes) if job.max_rss_bytes is not None else "-",
        "error": job.error or "-",
        "submitted": when(job.submitted_at),
        "not_before": when(job.not_before),
        "started": when(job.started_at),
        "finished": when(job.finished_at),
    }


def explanation_lines(explanation: Explanation) -> list[str]:
    """The decision in words; the filters are why nodes were left out, most common reason first."""
    lines = [f"Job {explanation.job_id} is {explanation.status}."]
    if explanation.waiting_for:  # not looked at by placement until they have succeeded
        lines.append("It waits for these jobs first:")
        for waited in explanation.waiting_for:
            needs = "to succeed" if waited.needs == "success" else "to end"
            lines.append(f"  {waited.job_id}  {needs}  ({waited.status})")
        more = explanation.waiting_count - len(explanation.waiting_for)
        if more > 0:  # the first ones alone are listed
            lines.append(f"  and {more} more")
    elif explanation.decided_at is None:
        lines.append("The scheduler has not considered it yet.")
    else:
        lines.append(f"Decided {when(explanation.decided_at)}: {explanation.summary or 'no summary'}")
    if explanation.filtered:
        lines.append("Nodes left out:")
        ranked = sorted(explanation.filtered.items(), key=lambda item: (-item[1], item[0]))
        lines += [f"  {count:>5}  {reason}" for reason, count in ranked]
    if explanation.candidates:
        lines.append("Candidates, best first:")
    return lines


def candidate_table(candidates: list[dict[str, Any]]) -> Table:
    """The scheduler's candidates in its order; ``parts`` is how each score was made up."""
    table = Table("node")
    table.add_column("score", justify="right")
    table.add_column("parts")
    for candidate in candidates:
        parts = candidate.get("parts")
        shown = ", ".join(f"{name} {value}" for name, value in parts.items()) if isinstance(parts, dict) else "-"
        table.add_row(str(candidate.get("node_id", "?")), str(candidate.get("score", "?")), shown)
    return table


def _submit_array(spec: JobSpec, count: int, *, wait: bool, as_json: bool) -> None:
    """Without ``wait``, stdout holds the array's id alone: ``ARRAY=$(fogctl job submit --array 10 -- …)``.
    With it, the array's summary once every job has ended, as ``fogctl job array wait`` prints it."""
    if not wait:
        submitted = account.with_saved_session(lambda client: client.submit_array(spec, count))
        typer.echo(json.dumps(submitted.model_dump(mode="json")) if as_json else submitted.array_id)
        account.console.print(f"Submitted {submitted.count} jobs as array {submitted.array_id}.", markup=False)
        return

    async def submit_and_wait(client: FogClient) -> ArraySummary:
        submitted = await client.submit_array(spec, count)
        # stderr: the id is what `fogctl job array cancel` needs if this wait is interrupted
        account.console.print(f"Submitted {submitted.count} jobs as array {submitted.array_id}; waiting for them"
                              " to end.", markup=False, soft_wrap=True)  # fmt: skip
        return await client.wait_array(submitted.array_id, poll_s=arrays.POLL_S)

    raise typer.Exit(arrays.report_end(account.with_saved_session(submit_and_wait), as_json=as_json))


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)
