"""What the agent tells its owner: sent in the background with the node's credential, tried again while the gateway
is away (the same message id each time), dropped when refused, the oldest dropped past the queue's bound. The
gateway here is scripted (httpx.MockTransport); the route itself, on real services, is in the gateway's chat tests
and the jobs e2e test."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from fog_agent import owner_messages
from fog_agent.owner_messages import OwnerMessages
from fog_shared.testing.waiting import wait_until

GATEWAY = "http://gateway.test"


class Gateway:
    """Answers each send with the next of ``answers`` (the last one stays); records what was sent."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers) or [201]
        self.sent: list[dict[str, str]] = []
        self.paths: set[str] = set()
        self.credentials: set[str | None] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.add(request.url.path)
        self.credentials.add(request.headers.get("Authorization"))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        self.sent.append(json.loads(request.content))
        return httpx.Response(answer, json={})


def messages(gateway: Gateway) -> OwnerMessages:
    line = OwnerMessages(GATEWAY, "node-credential", transport=httpx.MockTransport(gateway))
    line.retry_first_s = 0.01
    return line


async def test_a_message_goes_to_the_owner_with_the_nodes_credential() -> None:
    gateway = Gateway(201)
    line = messages(gateway)
    line.tell("the disk ran low")
    await line.close()  # waits for what is queued
    assert [body["text"] for body in gateway.sent] == ["the disk ran low"]
    assert gateway.paths == {"/v1/conversations/direct/owner/messages"}
    assert gateway.credentials == {"Bearer node-credential"}


async def test_a_message_the_gateway_did_not_take_is_tried_again_under_the_same_id() -> None:
    gateway = Gateway(httpx.ConnectError("refused"), 503, 201)
    line = messages(gateway)
    line.tell("first")
    line.tell("second")
    await line.close()
    assert [body["text"] for body in gateway.sent] == ["first", "first", "second"]  # the 503 reached it, then 201
    assert gateway.sent[0]["client_msg_id"] == gateway.sent[1]["client_msg_id"] != gateway.sent[2]["client_msg_id"]


async def test_a_refused_message_is_dropped_and_said(caplog: pytest.LogCaptureFixture) -> None:
    gateway = Gateway(403, 201)
    line = messages(gateway)
    with caplog.at_level(logging.WARNING):
        line.tell("not taken")
        line.tell("taken")
        await line.close()
    assert [body["text"] for body in gateway.sent] == ["not taken", "taken"]
    assert "the gateway refused a message to the owner (403)" in caplog.text


async def test_past_its_bound_the_queue_drops_its_oldest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(owner_messages, "QUEUE_MAX", 2)
    gateway = Gateway(httpx.ConnectError("away"), 201)  # the first try fails: the rest wait behind it
    line = messages(gateway)
    with caplog.at_level(logging.WARNING):
        for text in ("one", "two", "three"):
            line.tell(text)
        await line.close()
    assert "dropped the oldest: one" in caplog.text
    assert [body["text"] for body in gateway.sent] == ["two", "three"]  # "two" tried twice: it failed once


async def test_closing_gives_up_on_a_gateway_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owner_messages, "CLOSE_WAIT_S", 0.2)
    gateway = Gateway(httpx.ConnectError("away"))
    line = messages(gateway)
    line.tell("never sent")
    await wait_until(lambda: _tried(gateway), timeout=5, what="a first try")
    await asyncio.wait_for(line.close(), timeout=5)
    assert gateway.sent == []


async def _tried(gateway: Gateway) -> bool:
    return bool(gateway.paths)


def test_what_is_told_before_the_loop_runs_goes_once_it_starts() -> None:
    gateway = Gateway(201)
    line = messages(gateway)
    line.tell("said while starting")  # no loop runs yet: it waits

    async def serving() -> None:
        line.start()
        await line.close()

    asyncio.run(serving())
    assert [body["text"] for body in gateway.sent] == ["said while starting"]
