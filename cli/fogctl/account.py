"""``fogctl register|login|whoami|logout``: a user's session with the gateway, kept between commands."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import httpx
import pydantic
import typer
from rich.console import Console
from rich.markup import escape

from fog_client import ApiError, FogClient, Me, Tokens
from fogctl import session
from fogctl.session import Session, SessionError

DEFAULT_URL = "http://127.0.0.1:8080"
T = TypeVar("T")
console = Console(stderr=True)


def new_client(
    base_url: str,
    *,
    access_token: str | None = None,
    refresh_token: str | None = None,
    on_tokens: Callable[[Tokens], None] | None = None,
) -> FogClient:
    """Every command gets its client here, so that tests can hand it a mock transport instead."""
    return FogClient(base_url, access_token=access_token, refresh_token=refresh_token, on_tokens=on_tokens)


UrlOption = Annotated[str, typer.Option("--url", envvar="FOG_URL", help="The gateway")]
EmailOption = Annotated[str | None, typer.Option(help="Account email (prompted for when missing)")]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input, for scripts")
]


def login(url: UrlOption = DEFAULT_URL, email: EmailOption = None, password_stdin: PasswordStdinOption = False) -> None:
    """Log in to a Fog gateway and keep the session for the other commands."""
    email = _email(email, password_stdin)
    password = read_password(password_stdin)

    async def run() -> tuple[Session, Me]:
        async with new_client(url) as client:
            saved = await session.login(client, email, password)
            return saved, await client.me()

    saved, me = call_gateway(url, run())
    console.print(f"Logged in to {escape(saved.gateway_url)} as {escape(saved.email)}.")
    _print_me(saved, me)


def register(
    url: UrlOption = DEFAULT_URL,
    email: EmailOption = None,
    provider: Annotated[
        bool, typer.Option("--provider", help="Also the provider role: offer machines as nodes (fog-agent join)")
    ] = False,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Create an account on a Fog gateway, then log in to it as `fogctl login` does."""
    email = _email(email, password_stdin)
    password = read_new_password(password_stdin)
    roles = ("user", "provider") if provider else ("user",)

    async def run() -> tuple[Session, Me]:
        async with new_client(url) as client:
            await client.register(email, password, roles=roles)
            saved = await session.login(client, email, password)
            return saved, await client.me()

    saved, me = call_gateway(url, run())
    console.print(f"Registered and logged in to {escape(saved.gateway_url)} as {escape(saved.email)}.")
    _print_me(saved, me)


def _email(given: str | None, password_stdin: bool) -> str:
    if given is not None:
        return given
    if password_stdin:  # standard input is the password's: there is nobody to ask
        raise typer.Exit(fail("--password-stdin needs --email"))
    email: str = typer.prompt("Email")
    return email


def whoami(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """Who the saved session is: kind, ids and roles, as the gateway sees them."""
    saved = saved_session()

    async def run() -> Me:
        async with new_client(
            saved.gateway_url,
            access_token=saved.access_token,
            refresh_token=saved.refresh_token,
            on_tokens=saved.keep,  # a refresh rotates the refresh token: the file must follow
        ) as client:
            return await client.me()

    me = call_gateway(saved.gateway_url, run(), on_401="the session has ended; run `fogctl login`")
    if as_json:
        typer.echo(json.dumps({"gateway_url": saved.gateway_url, "email": saved.email, **me.model_dump(mode="json")}))
    else:
        _print_me(saved, me)


def logout() -> None:
    """End the session on the gateway and forget it here."""
    try:
        saved = Session.load()
    except SessionError as exc:  # nothing in it can end the session on the gateway: forget it here
        session.delete()
        console.print(f"{escape(str(exc))}: removed it.")
        return
    if saved is None:
        raise typer.Exit(fail("not logged in"))

    async def run() -> None:
        async with new_client(saved.gateway_url, refresh_token=saved.refresh_token) as client:
            await client.logout()

    # An unreachable gateway keeps the file: the session is still live there and can be ended later.
    call_gateway(saved.gateway_url, run())
    session.delete(saved.path)
    console.print("Logged out.")


def saved_session() -> Session:
    try:
        saved = Session.load()
    except SessionError as exc:
        raise typer.Exit(fail(f"{exc}; `fogctl login` replaces it")) from None
    if saved is None:
        raise typer.Exit(fail("not logged in; run `fogctl login`"))
    return saved


def read_password(from_stdin: bool, prompt: str = "Password") -> str:
    """Typed at the terminal (never echoed), or a line of standard input for scripts."""
    if not from_stdin:
        password: str = typer.prompt(prompt, hide_input=True)
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise typer.Exit(fail(f"no {prompt.lower()} on standard input"))
    return password


def read_new_password(from_stdin: bool, prompt: str = "Password") -> str:
    """As ``read_password``; typed twice at a terminal, so that a typo is caught."""
    if from_stdin:
        return read_password(from_stdin, prompt)
    password: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    return password


def call_gateway(gateway_url: str, work: Coroutine[Any, Any, T], *, on_401: str | None = None) -> T:
    """Run a command's calls; what can go wrong becomes one line on stderr and exit status 1."""
    try:
        return asyncio.run(work)
    except ApiError as exc:
        hint = f"; {on_401}" if on_401 and exc.status == 401 else ""
        said = f"{gateway_url} refused: {exc}{_what_was_invalid(exc)}{hint}{_traceable(exc)}"
        raise typer.Exit(fail(said)) from None
    except httpx.TransportError as exc:
        raise typer.Exit(fail(f"cannot reach the gateway at {gateway_url}: {exc or exc.__class__.__name__}")) from None
    except pydantic.ValidationError:
        raise typer.Exit(fail(f"{gateway_url} answered something unexpected: is it a Fog gateway?")) from None


#: where a 422's ``loc`` begins before naming the field itself
_REQUEST_PARTS = {"body", "query", "path", "header"}


def _what_was_invalid(exc: ApiError) -> str:
    """A 422's ``errors``, one ``field: why`` each: without them the user learns only that something was."""
    errors = exc.problem.get("errors")
    if exc.status != 422 or not isinstance(errors, list):
        return ""
    said = []
    for error in errors:
        if not isinstance(error, dict) or not error.get("msg"):
            continue
        loc = [str(part) for part in error.get("loc") or []]
        if loc and loc[0] in _REQUEST_PARTS:
            loc = loc[1:]
        said.append(f"{'.'.join(loc)}: {error['msg']}" if loc else str(error["msg"]))
    return "".join(f"; {each}" for each in said)


def _traceable(exc: ApiError) -> str:
    """For a failure on the platform's side, the request id an admin traces it by (``fogctl events trace``)."""
    if exc.status < 500 or not exc.request_id:
        return ""
    return f" (request {exc.request_id}: `fogctl events trace {exc.request_id}`)"


def _print_me(saved: Session, me: Me) -> None:
    rows = {
        "gateway": saved.gateway_url,
        "email": saved.email,
        "kind": me.kind,
        "user_id": me.user_id,
        "node_id": me.node_id,
        "api_key_id": me.api_key_id,
        "session_id": me.session_id,
        "roles": ", ".join(me.roles) or "(none)",
    }
    for label, value in rows.items():
        if value is not None:
            typer.echo(f"{label:<11} {value}")


def fail(message: str) -> int:
    console.print(f"[red]{escape(message)}[/]", soft_wrap=True)  # one line, whatever the width: grep-able
    return 1


#: what a command says when the saved session can no longer be refreshed
SESSION_ENDED = "the session has ended; run `fogctl login`"


def with_saved_session(call: Callable[[FogClient], Awaitable[T]]) -> T:
    """One command's calls with the saved session; failures become one line on stderr and exit status 1."""
    saved = saved_session()

    async def run() -> T:
        async with new_client(
            saved.gateway_url,
            access_token=saved.access_token,
            refresh_token=saved.refresh_token,
            on_tokens=saved.keep,  # a refresh rotates the refresh token: the file must follow
        ) as client:
            return await call(client)

    return call_gateway(saved.gateway_url, run(), on_401=SESSION_ENDED)
