"""``fog-agent join``: measure this machine, register it as a node, and keep the node's credential."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import pydantic
import typer

from fog_agent.cli import StateDirOption, fail
from fog_agent.fingerprint import fingerprint
from fog_agent.protocol import connect_url
from fog_agent.sandbox.policy import job_networks_from_env
from fog_agent.sandbox.users import SandboxError
from fog_agent.state import NodeState, StateError, prepare_dir, state_path
from fog_client import ApiError, Capabilities, FogClient, RegisteredNode

T = TypeVar("T")
MAX_NAME = 64


def new_client(base_url: str, *, api_key: str | None = None) -> FogClient:
    """Every call gets its client here, so that tests can hand it a mock transport instead."""
    return FogClient(base_url, api_key=api_key)


def join(
    gateway: Annotated[str, typer.Option("--gateway", help="The gateway's URL, e.g. https://fog.example.org")],
    name: Annotated[str | None, typer.Option(help="The node's name (default: this machine's host name)")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="key=value; repeat for more")] = None,
    region: Annotated[str | None, typer.Option(help="Where the node is, e.g. eu-west")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="A provider API key (default: $FOG_API_KEY)", show_default=False)
    ] = None,
    email: Annotated[str | None, typer.Option(help="Log in as this provider account instead of using a key")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input, for scripts")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Join again as a new node, replacing the state")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Register this machine as a node of the gateway and keep its credential for `fog-agent run`."""
    labels = parse_labels(label or [])
    try:
        connect_url(gateway)  # what `fog-agent run` will need: find out now, before registering
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gateway") from None
    api_key = _choose_credential(api_key, email, password_stdin)
    path = state_path(state_dir)
    previous = _previous_state(path, force)
    login = None if email is None else (email, _read_password(password_stdin))
    node_name = name or socket.gethostname()[:MAX_NAME] or "node"
    try:
        prepare_dir(path.parent)  # before registering: a credential that cannot be saved is lost for good
    except OSError as exc:
        raise typer.Exit(fail(f"cannot create the state directory {path.parent}: {exc.strerror or exc}")) from None
    try:
        networks = job_networks_from_env()
    except SandboxError as exc:
        raise typer.Exit(fail(f"cannot offer this machine: {exc}")) from None
    capabilities = fingerprint(path.parent, networks)

    registered = _call(gateway, _register(gateway, api_key, login, node_name, capabilities, labels, region))
    node = registered.node
    try:
        NodeState(
            gateway.rstrip("/"), node.id, node.name, registered.credential, path, tuple(capabilities.networks)
        ).save()
    except OSError as exc:
        message = f"registered node {node.id} but cannot save its state to {path}: {exc.strerror or exc}"
        raise typer.Exit(fail(f"{message}; `fogctl node deregister {node.id}` removes it")) from None
    if previous is not None and previous.node_id != node.id:
        typer.echo(
            f"The previous node {previous.node_id} stays registered; `fogctl node deregister {previous.node_id}` "
            "removes it.",
            err=True,
        )
    gpus = f", {len(capabilities.gpus)} GPU(s)" if capabilities.gpus else ""
    typer.echo(
        f"Joined {gateway} as node {node.id} ({node.name}): {capabilities.cpu_cores} cores, "
        f"{capabilities.memory_bytes / 2**30:.1f} GiB{gpus}, {capabilities.disk_bytes / 2**30:.1f} GiB of disk for "
        f"jobs, jobs with network {' or '.join(capabilities.networks)}. "
        "Start it with `fog-agent run`.",
        err=True,
    )
    typer.echo(node.id)  # alone on stdout, for scripts


def parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, equals, text = value.partition("=")
        if not equals or not key:
            raise typer.BadParameter(f"{value!r} is not key=value", param_hint="--label")
        labels[key] = text
    return labels


def _choose_credential(api_key: str | None, email: str | None, password_stdin: bool) -> str | None:
    """The API key to register with, or ``None`` to log in with ``email``."""
    if api_key and email:
        raise typer.BadParameter("give --api-key or --email, not both")
    if password_stdin and not email:
        raise typer.BadParameter("--password-stdin needs --email")
    if email:
        return None
    api_key = api_key or os.environ.get("FOG_API_KEY")  # read here: an explicit --email wins over the environment
    if not api_key:
        raise typer.BadParameter("give --api-key (or set FOG_API_KEY) or --email")
    return api_key


def _previous_state(path: Path, force: bool) -> NodeState | None:
    try:
        previous = NodeState.load(path)
    except StateError as exc:
        if not force:
            raise typer.Exit(fail(f"{exc}; `--force` replaces it")) from None
        return None
    if previous is not None and not force:
        message = f"this machine already joined {previous.gateway_url} as node {previous.node_id} (state in {path})"
        raise typer.Exit(fail(f"{message}; `--force` joins again as a new node"))
    return previous


def _read_password(from_stdin: bool) -> str:
    if not from_stdin:
        password: str = typer.prompt("Password", hide_input=True)
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise typer.Exit(fail("no password on standard input"))
    return password


async def _register(
    gateway: str,
    api_key: str | None,
    login: tuple[str, str] | None,
    name: str,
    capabilities: Capabilities,
    labels: dict[str, str],
    region: str | None,
) -> RegisteredNode:
    async with new_client(gateway, api_key=api_key) as client:
        if login is not None:
            await client.login(*login)
        try:
            return await client.register_node(name, capabilities, labels=labels, region=region)
        finally:
            if login is not None:  # the session was for this one call: leave none behind
                with contextlib.suppress(ApiError, httpx.TransportError):
                    await client.logout()


def _call(gateway: str, work: Coroutine[Any, Any, T]) -> T:
    """Run the calls; what can go wrong becomes one line on stderr and exit status 1."""
    try:
        return asyncio.run(work)
    except ApiError as exc:
        hint = "; joining needs a provider account or a provider API key" if exc.status in (401, 403) else ""
        raise typer.Exit(fail(f"{gateway} refused: {exc}{hint}")) from None
    except httpx.TransportError as exc:
        raise typer.Exit(fail(f"cannot reach the gateway at {gateway}: {exc or exc.__class__.__name__}")) from None
    except pydantic.ValidationError:
        raise typer.Exit(fail(f"{gateway} answered something unexpected: is it a Fog gateway?")) from None
