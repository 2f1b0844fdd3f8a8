"""FogClient's job calls: HTTP against a scripted gateway (MockTransport), updates against a real WebSocket server."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosedError
from websockets.http11 import Request, Response

from fog_client import Affinity, ApiError, Constraints, FogClient, Job, JobSpec, Resources
from fog_client.client import ARRAY_TIMEOUT_S

URL = "http://gateway.test"
NOW = "2030-01-02T03:04:05Z"
AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
DEFAULT_SPEC = {
    "command": ["echo", "hi"],
    "env": {},
    "resources": {"cpu_cores": 1.0, "memory_bytes": 256 * 2**20, "gpus": 0},
    "constraints": {"labels": {}},
    "affinities": [],
    "priority": 50,
    "timeout_s": 3600.0,
    "max_attempts": 3,
    "retry_backoff_s": 1.0,
}


def job(job_id: str = "j1", **changes: Any) -> dict[str, Any]:
    body = {
        "id": job_id, "owner_id": "u1", "name": None, "array_id": None, "array_index": None, "spec": DEFAULT_SPEC,
        "status": "pending", "attempt": 0, "node_id": None, "not_before": None, "exit_code": None,
        "duration_s": None, "error": None, "submitted_at": NOW, "started_at": None, "finished_at": None,
    }  # fmt: skip
    return {**body, **changes}


def problem(status: int, code: str) -> dict[str, Any]:
    return {"type": f"urn:fog:problem:{code}", "title": code.replace("_", " "), "status": status, "code": code}


class Gateway:
    """Records each request and answers from ``replies`` (method, raw path with query) in order, last one repeating."""

    def __init__(self, replies: dict[tuple[str, str], list[httpx.Response]]) -> None:
        self.replies = replies
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.replies.get((request.method, request.url.raw_path.decode()))
        if not answers:
            return httpx.Response(404, json=problem(404, "not_found"))
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.content]


def client(gateway: Gateway, **kwargs: Any) -> FogClient:
    return FogClient(URL, access_token="a1", transport=httpx.MockTransport(gateway), **kwargs)


def test_a_spec_has_the_documented_defaults() -> None:
    spec = JobSpec(command=["echo", "hi"])
    lists = {"outputs": [], "after": [], "after_any": [], "files": {}}
    resources = {**DEFAULT_SPEC["resources"], "disk_bytes": 0}  # sent only when stated: see below
    assert spec.model_dump(mode="json", exclude_none=True) == {**DEFAULT_SPEC, **lists, "resources": resources}
    assert (spec.name, spec.idempotency_key, spec.constraints.region, spec.constraints.arch) == (None, None, None, None)


async def test_a_stated_disk_is_sent_and_none_stated_is_left_out_for_older_gateways() -> None:
    gateway = Gateway({("POST", "/v1/jobs"): [httpx.Response(201, json=job(spec=DEFAULT_SPEC))]})
    async with client(gateway) as fog:
        await fog.submit_job(JobSpec(command=["true"], resources=Resources(disk_bytes=2**30)))
        await fog.submit_job(JobSpec(command=["true"]))
    stated, unstated = gateway.bodies()
    assert stated["resources"]["disk_bytes"] == 2**30
    assert "disk_bytes" not in unstated["resources"]


async def test_submitting_sends_the_spec_without_nulls_and_parses_the_job() -> None:
    gateway = Gateway({("POST", "/v1/jobs"): [httpx.Response(201, json=job(spec=DEFAULT_SPEC))]})
    spec = JobSpec(
        command=["python", "-c", "print(1)"],
        env={"MODE": "fast"},
        resources=Resources(cpu_cores=0.5, memory_bytes=2**30, gpus=1),
        constraints=Constraints(labels={"zone": "a"}, region="eu-west"),
        affinities=[Affinity(label="disk", value="ssd", weight=20)],
        priority=90,
        name="calc",
        idempotency_key="k-1",
    )
    async with client(gateway) as fog:
        submitted = await fog.submit_job(spec)
    [sent] = gateway.bodies()
    assert sent == {
        **DEFAULT_SPEC,
        "command": ["python", "-c", "print(1)"],
        "env": {"MODE": "fast"},
        "resources": {"cpu_cores": 0.5, "memory_bytes": 2**30, "gpus": 1},
        "constraints": {"labels": {"zone": "a"}, "region": "eu-west"},
        "affinities": [{"label": "disk", "value": "ssd", "weight": 20}],
        "priority": 90,
        "name": "calc",
        "idempotency_key": "k-1",
    }
    assert isinstance(sent["resources"]["memory_bytes"], int)  # strict gateway: never 1073741824.0
    assert (submitted.id, submitted.status, submitted.submitted_at, submitted.ended) == ("j1", "pending", AT, False)
    assert submitted.spec == JobSpec(command=["echo", "hi"])


async def test_an_array_is_one_spec_and_a_count() -> None:
    listed = {"array_id": "a1", "count": 2, "job_ids": ["j1", "j2"]}
    large = {"array_id": "a2", "count": 5000}
    gateway = Gateway({("POST", "/v1/jobs/array"): [httpx.Response(201, json=listed), httpx.Response(201, json=large)]})
    async with client(gateway) as fog:
        small_array = await fog.submit_array(JobSpec(command=["echo", "hi"]), 2)
        large_array = await fog.submit_array(JobSpec(command=["echo", "hi"]), 5000)
    assert gateway.bodies()[0] == {"spec": DEFAULT_SPEC, "count": 2}
    assert (small_array.array_id, small_array.count, small_array.job_ids) == ("a1", 2, ["j1", "j2"])
    assert (large_array.count, large_array.job_ids) == (5000, None)  # too many to list


def summary(statuses: dict[str, int], ended: int) -> dict[str, Any]:
    return {"array_id": "a1", "count": 4, "submitted_at": NOW, "statuses": statuses, "ended": ended}


async def test_an_array_is_summed_up_cancelled_and_waited_for_with_the_time_its_size_takes() -> None:
    states = [summary({"pending": 4}, 0), summary({"running": 1, "succeeded": 3}, 3), summary({"succeeded": 4}, 4)]
    gateway = Gateway({
        ("GET", "/v1/jobs/arrays/a1"): [httpx.Response(200, json=state) for state in states],
        ("POST", "/v1/jobs/arrays/a1/cancel"): [httpx.Response(200, json=summary({"cancelled": 4}, 4))],
        ("POST", "/v1/jobs/array"): [httpx.Response(201, json={"array_id": "a1", "count": 4})],
    })  # fmt: skip
    async with client(gateway) as fog:
        first = await fog.array_summary("a1")
        waited = await fog.wait_array("a1", poll_s=0)
        cancelled = await fog.cancel_array("a1")
        await fog.submit_array(JobSpec(command=["true"]), 4)
    assert (first.done, first.submitted_at, waited.done, waited.all_succeeded) == (False, AT, True, True)
    assert (cancelled.statuses, cancelled.done, cancelled.all_succeeded) == ({"cancelled": 4}, True, False)
    timeouts = {(r.method, r.url.path): r.extensions["timeout"]["read"] for r in gateway.requests}
    assert timeouts == {("GET", "/v1/jobs/arrays/a1"): 10.0, ("POST", "/v1/jobs/arrays/a1/cancel"): ARRAY_TIMEOUT_S,
                        ("POST", "/v1/jobs/array"): ARRAY_TIMEOUT_S}  # fmt: skip


async def test_waiting_for_an_array_gives_up_after_the_timeout() -> None:
    gateway = Gateway({("GET", "/v1/jobs/arrays/a1"): [httpx.Response(200, json=summary({"running": 4}, 0))]})
    async with client(gateway) as fog:
        with pytest.raises(TimeoutError):
            await fog.wait_array("a1", poll_s=0, timeout=0)


async def test_listing_sends_only_the_filters_given() -> None:
    page = {"items": [job("j1"), job("j2", status="running", node_id="n1", attempt=1)], "next_cursor": "c2"}
    gateway = Gateway(
        {
            ("GET", "/v1/jobs?status=running&array_id=a1&limit=2&cursor=c1"): [httpx.Response(200, json=page)],
            ("GET", "/v1/jobs"): [httpx.Response(200, json={"items": [], "next_cursor": None})],
        }
    )
    async with client(gateway) as fog:
        first = await fog.list_jobs(status="running", array_id="a1", limit=2, cursor="c1")
        empty = await fog.list_jobs()
    assert ([j.id for j in first.items], first.next_cursor) == (["j1", "j2"], "c2")
    assert (first.items[1].node_id, first.items[1].attempt) == ("n1", 1)
    assert (empty.items, empty.next_cursor) == ([], None)


async def test_iterating_follows_the_cursors_to_the_last_page() -> None:
    gateway = Gateway(
        {
            ("GET", "/v1/jobs?status=failed&limit=2"): [
                httpx.Response(200, json={"items": [job("j1"), job("j2")], "next_cursor": "c2"})
            ],
            ("GET", "/v1/jobs?status=failed&limit=2&cursor=c2"): [
                httpx.Response(200, json={"items": [job("j3")], "next_cursor": None})
            ],
        }
    )
    async with client(gateway) as fog:
        ids = [listed.id async for listed in fog.iter_jobs(status="failed", limit=2)]
    assert ids == ["j1", "j2", "j3"]
    assert len(gateway.requests) == 2


async def test_one_job_is_read_cancelled_explained_and_its_output_fetched() -> None:
    explanation = {
        "job_id": "j1",
        "status": "running",
        "decided_at": NOW,
        "summary": "placed on n1 among 2 candidates",
        "filtered": {"too little memory": 3},
        "candidates": [{"node_id": "n1", "score": 71.5, "parts": {"fit": 60.0, "affinity": 11.5}}],
        "future_field": True,
    }
    output = {"output": "hi\n\x1b[1mbold\x1b[0m", "truncated": False, "exit_code": 0}
    gateway = Gateway(
        {
            ("GET", "/v1/jobs/j1"): [httpx.Response(200, json=job(status="running"))],
            ("POST", "/v1/jobs/j%2F1/cancel"): [httpx.Response(200, json=job("j/1", status="cancelled"))],
            ("GET", "/v1/jobs/j1/output"): [httpx.Response(200, json=output)],
            ("GET", "/v1/jobs/j1/explain"): [httpx.Response(200, json=explanation)],
        }
    )
    async with client(gateway) as fog:
        assert (await fog.get_job("j1")).status == "running"
        cancelled = await fog.cancel_job("j/1")  # an id stays one path segment
        captured = await fog.job_output("j1")
        explained = await fog.explain_job("j1")
        with pytest.raises(ApiError) as refused:
            await fog.get_job("someone-elses")
        with pytest.raises(ValueError, match="not an id"):
            await fog.job_output("..")
    assert (cancelled.status, cancelled.ended) == ("cancelled", True)
    assert (captured.output, captured.truncated, captured.exit_code) == ("hi\n\x1b[1mbold\x1b[0m", False, 0)
    assert (explained.decided_at, explained.filtered) == (AT, {"too little memory": 3})
    assert explained.candidates[0]["parts"] == {"fit": 60.0, "affinity": 11.5}
    assert (refused.value.status, refused.value.code) == (404, "not_found")


async def test_waiting_polls_until_the_job_has_ended() -> None:
    states = [job(status="pending"), job(status="running"), job(status="failed", exit_code=3, error="exit 3")]
    gateway = Gateway({("GET", "/v1/jobs/j1"): [httpx.Response(200, json=state) for state in states]})
    async with client(gateway) as fog:
        ended = await fog.wait_job("j1", poll_s=0)
    assert (ended.status, ended.exit_code, ended.error) == ("failed", 3, "exit 3")
    assert len(gateway.requests) == 3


async def test_a_lost_job_is_still_waited_for() -> None:
    states = [job(status="lost"), job(status="succeeded", exit_code=0)]  # lost goes back to pending
    gateway = Gateway({("GET", "/v1/jobs/j1"): [httpx.Response(200, json=state) for state in states]})
    async with client(gateway) as fog:
        assert (await fog.wait_job("j1", poll_s=0)).status == "succeeded"


async def test_waiting_gives_up_after_the_timeout() -> None:
    gateway = Gateway({("GET", "/v1/jobs/j1"): [httpx.Response(200, json=job(status="running"))]})
    async with client(gateway) as fog:
        with pytest.raises(TimeoutError):
            await fog.wait_job("j1", poll_s=0, timeout=0)


# -- updates over the WebSocket -----------------------------------------------------------------------


class Updates:
    """``/v1/jobs/updates``, scripted: sends ``messages`` to an accepted connection, then closes it.

    A wrong bearer is refused as the gateway does (accept, then close with 4401) or, with
    ``refuse_in_handshake``, with an HTTP 401 as a proxy in front of it may.
    """

    def __init__(self) -> None:
        self.url = ""
        self.valid_bearer = "Bearer a1"
        self.refuse_in_handshake = False
        self.close_with: int | None = None  # close every accepted connection with this code instead
        self.http_refusal: tuple[int, dict[str, Any]] | None = None  # answer every handshake with this instead
        self.messages: list[Any] = []
        self.requests: list[Request] = []

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.http_refusal is not None:
            return connection.respond(self.http_refusal[0], json.dumps(self.http_refusal[1]))
        if self.refuse_in_handshake and request.headers.get("Authorization") != self.valid_bearer:
            return connection.respond(401, json.dumps(problem(401, "invalid_token")))
        return None

    async def handler(self, ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.headers.get("Authorization") != self.valid_bearer:
            await ws.close(4401, "invalid token")
            return
        if self.close_with is not None:
            await ws.close(self.close_with, "refused")
            return
        for message in self.messages:
            await ws.send(json.dumps(message))
        await ws.close()


@pytest.fixture
async def updates() -> AsyncIterator[Updates]:
    fake = Updates()
    quiet = logging.getLogger("test.updates")  # the server logs the client's headers at DEBUG: keep them apart
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.check, logger=quiet) as server:
        fake.url = f"http://127.0.0.1:{_port(server)}"
        yield fake


def _port(server: Server) -> int:
    port: int = next(iter(server.sockets)).getsockname()[1]
    return port


async def collect(fog: FogClient) -> list[Job]:
    async with contextlib.aclosing(fog.job_updates()) as stream:
        return [update async for update in stream]


async def test_updates_are_the_jobs_in_job_messages(updates: Updates) -> None:
    updates.messages = [
        {"type": "job", "job": job(status="running", node_id="n1")},
        {"type": "something_newer", "detail": 1},  # a newer gateway's message: skipped
        {"type": "job", "job": job(status="succeeded", exit_code=0)},
    ]
    async with FogClient(updates.url, access_token="a1", request_id="req-7") as fog:
        seen = await collect(fog)
    assert [(j.id, j.status) for j in seen] == [("j1", "running"), ("j1", "succeeded")]
    [request] = updates.requests
    assert request.path == "/v1/jobs/updates"
    assert (request.headers["Authorization"], request.headers["X-Request-ID"]) == ("Bearer a1", "req-7")


async def test_an_api_key_is_the_bearer_of_the_updates(updates: Updates) -> None:
    updates.valid_bearer = "Bearer fogk_k"
    async with FogClient(f"{updates.url}/", access_token="a1", api_key="fogk_k") as fog:
        assert await collect(fog) == []


@pytest.mark.parametrize("in_handshake", [False, True])
async def test_updates_refresh_an_expired_session_once(updates: Updates, in_handshake: bool) -> None:
    updates.refuse_in_handshake = in_handshake
    updates.valid_bearer = "Bearer a2"
    updates.messages = [{"type": "job", "job": job()}]

    def auth(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content) == {"refresh_token": "r1"}
        return httpx.Response(200, json={"access_token": "a2", "refresh_token": "r2", "expires_in": 600})

    transport = httpx.MockTransport(auth)  # the refresh is plain HTTP; only the updates are a WebSocket
    async with FogClient(updates.url, access_token="a1", refresh_token="r1", transport=transport) as fog:
        assert [j.id for j in await collect(fog)] == ["j1"]
        assert fog.access_token == "a2"
    assert [r.headers["Authorization"] for r in updates.requests] == ["Bearer a1", "Bearer a2"]


@pytest.mark.parametrize("in_handshake", [False, True])
async def test_a_second_refusal_is_the_answer(updates: Updates, in_handshake: bool) -> None:
    updates.refuse_in_handshake = in_handshake
    updates.valid_bearer = "Bearer never"

    def auth(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": "a2", "refresh_token": "r2", "expires_in": 600})

    transport = httpx.MockTransport(auth)
    async with FogClient(updates.url, access_token="a1", refresh_token="r1", transport=transport) as fog:
        with pytest.raises(ApiError) as refused:
            await collect(fog)
    assert refused.value.status == 401
    assert len(updates.requests) == 2


async def test_a_refused_handshake_raises_the_problem(updates: Updates) -> None:
    updates.http_refusal = (403, problem(403, "insufficient_scope"))
    async with FogClient(updates.url, access_token="a1", refresh_token="r1") as fog:
        with pytest.raises(ApiError) as refused:
            await collect(fog)
    assert (refused.value.status, refused.value.code) == (403, "insufficient_scope")
    assert len(updates.requests) == 1


async def test_a_forbidding_close_raises_without_refreshing(updates: Updates) -> None:
    updates.close_with = 4403
    async with FogClient(updates.url, access_token="a1", refresh_token="r1") as fog:
        with pytest.raises(ApiError) as refused:
            await collect(fog)
    assert (refused.value.status, refused.value.title, refused.value.detail) == (403, "Forbidden", "refused")
    assert len(updates.requests) == 1  # a 403 is not cured by refreshing


async def test_another_close_is_a_dropped_connection(updates: Updates) -> None:
    updates.close_with = 1011  # the gateway failed: worth reconnecting later, not a refusal
    async with FogClient(updates.url, access_token="a1") as fog:
        with pytest.raises(ConnectionClosedError):
            await collect(fog)


def printed(output: str, length: int, *, ended: bool = False, attempt: int = 1) -> httpx.Response:
    body = {"output": output, "truncated": False, "exit_code": 0 if ended else None, "length": length,
            "ended": ended, "attempt": attempt}  # fmt: skip
    return httpx.Response(200, json=body)


async def test_following_output_asks_from_where_it_got_to_and_starts_a_retry_from_its_beginning() -> None:
    path = "/v1/jobs/j1/output"
    gateway = Gateway(
        {
            ("GET", path): [printed("one\n", 4), printed("again\n", 6, attempt=2)],
            ("GET", f"{path}?offset=4"): [printed("", 4), printed("two\n", 8)],
            ("GET", f"{path}?offset=8"): [printed("", 0, attempt=2)],  # retried: its output starts anew
            ("GET", f"{path}?offset=6"): [printed("done\n", 11, ended=True, attempt=2)],
        }
    )
    async with client(gateway) as fog:
        pieces = [piece async for piece in fog.follow_output("j1", poll_s=0)]
    assert [(p.output, p.attempt, p.ended) for p in pieces] == [
        ("one\n", 1, False), ("two\n", 1, False), ("again\n", 2, False), ("done\n", 2, True)
    ]  # fmt: skip
    asked = [r.url.raw_path.decode().removeprefix(path) for r in gateway.requests]
    assert asked == ["", "?offset=4", "?offset=4", "?offset=8", "", "?offset=6"]
