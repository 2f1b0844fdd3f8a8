"""FogClient tries again what failed on the way, when that cannot do a thing twice (a scripted gateway)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from fog_client import ApiError, FogClient, JobSpec
from fog_client import retries as retries_

URL = "http://gateway.test"
ME = {"kind": "user", "user_id": "u1", "node_id": None, "roles": ["user"], "session_id": "s1", "api_key_id": None}
Answer = httpx.Response | Exception


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries_, "FIRST_WAIT_S", 0.0)  # the waits' lengths are pause_before's test


def unavailable(retry_after: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/problem+json", **({"Retry-After": retry_after} if retry_after else {})}
    body = {"type": "urn:fog:problem:service_unavailable", "title": "Service unavailable", "status": 503}
    return httpx.Response(503, json=body, headers=headers)


def limited(retry_after: str) -> httpx.Response:
    body = {"type": "urn:fog:problem:rate_limited", "title": "Too many requests", "status": 429}
    return httpx.Response(429, json=body, headers={"Retry-After": retry_after})


class Script:
    """Answers each request with the next of ``answers`` (the last one stays), and counts them."""

    def __init__(self, *answers: Answer) -> None:
        self._answers: Iterator[Answer] = iter(answers)
        self._last = answers[-1]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = next(self._answers, self._last)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(script: Callable[[httpx.Request], httpx.Response], retries: int = retries_.RETRIES) -> FogClient:
    return FogClient(URL, access_token="a1", transport=httpx.MockTransport(script), retries=retries)


def job(**spec: object) -> dict[str, object]:
    return {"id": "j1", "owner_id": "u1", "status": "pending", "attempt": 0, "submitted_at": "2030-01-01T00:00:00Z",
            "spec": {"command": ["true"], **spec}}  # fmt: skip


async def test_a_read_turned_away_by_a_restarting_service_is_asked_again_until_answered() -> None:
    script = Script(unavailable(), unavailable("0"), httpx.Response(200, json=ME))
    async with client(script) as fog:
        assert (await fog.me()).user_id == "u1"
    assert len(script.requests) == 3


async def test_a_submit_that_may_have_been_done_is_not_sent_again_unless_it_has_a_key() -> None:
    script = Script(unavailable(), httpx.Response(201, json=job()))
    async with client(script) as fog:
        with pytest.raises(ApiError) as refused:
            await fog.submit_job(JobSpec(command=["true"]))
    assert (refused.value.status, len(script.requests)) == (503, 1)

    keyed = Script(unavailable(), httpx.Response(201, json=job(idempotency_key="k1")))
    async with client(keyed) as fog:
        submitted = await fog.submit_job(JobSpec(command=["true"], idempotency_key="k1"))
    assert (submitted.id, len(keyed.requests)) == ("j1", 2)  # the key answers the same job, done once or not


async def test_what_never_left_or_was_turned_away_at_the_door_is_sent_again_whatever_it_is() -> None:
    refused_connection = httpx.ConnectError("connection refused")
    script = Script(refused_connection, limited("0"), httpx.Response(201, json=job()))
    async with client(script) as fog:
        assert (await fog.submit_job(JobSpec(command=["true"]))).id == "j1"
    assert len(script.requests) == 3


async def test_a_connection_cut_before_the_answer_is_tried_again_for_a_read_alone() -> None:
    cut = httpx.RemoteProtocolError("the server went away")
    reads = Script(cut, httpx.Response(200, json=ME))
    async with client(reads) as fog:
        assert (await fog.me()).user_id == "u1"
    submits = Script(cut, httpx.Response(201, json=job()))
    async with client(submits) as fog:
        with pytest.raises(httpx.RemoteProtocolError):
            await fog.submit_job(JobSpec(command=["true"]))
    assert (len(reads.requests), len(submits.requests)) == (2, 1)


async def test_tries_are_bounded_and_a_long_wait_asked_for_or_a_timeout_is_the_callers() -> None:
    always = Script(unavailable())
    async with client(always) as fog:
        with pytest.raises(ApiError):
            await fog.me()
    assert len(always.requests) == 1 + retries_.RETRIES
    never = Script(unavailable(), httpx.Response(200, json=ME))
    async with client(never, retries=0) as fog:
        with pytest.raises(ApiError):
            await fog.me()
    locked = Script(limited("300"), httpx.Response(200, json=ME))  # an account locked for five minutes
    async with client(locked) as fog:
        with pytest.raises(ApiError) as refused:
            await fog.me()
    assert refused.value.retry_after == 300
    slow = Script(httpx.ReadTimeout("the gateway is slow"), httpx.Response(200, json=ME))
    async with client(slow) as fog:
        with pytest.raises(httpx.ReadTimeout):
            await fog.me()
    assert (len(never.requests), len(locked.requests), len(slow.requests)) == (1, 1, 1)


def test_the_wait_is_what_the_gateway_asked_or_doubles_with_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries_, "FIRST_WAIT_S", 0.25)
    assert retries_.pause_before(0, 2.0) == 2.0
    assert retries_.pause_before(0, retries_.MAX_WAIT_S + 1) is None
    for retry in range(4):
        pause = retries_.pause_before(retry, None)
        assert pause is not None
        assert 0.25 * 2**retry / 2 <= pause <= 0.25 * 2**retry
