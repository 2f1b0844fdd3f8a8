"""Driving BitChat through the gateway in tests: signed-in members and their calls."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from gateway_stack import Stack

from fog_messaging import store
from fog_shared.testing.waiting import wait_until

#: the gateway's rate limits, out of the way of tests that send a thousand messages
GENEROUS_LIMITS = {
    "rate_per_source_per_s": 100_000.0, "burst_per_source": 100_000,
    "rate_per_principal_per_s": 100_000.0, "burst_per_principal": 100_000,
}  # fmt: skip


@dataclass
class Member:
    """A signed-in user and their HTTP client."""

    http: httpx.AsyncClient
    id: str
    headers: dict[str, str]
    tokens: dict[str, str] | None = None
    email: str = ""

    async def send(self, conversation_id: str, text: str, client_msg_id: str | None = None, **extra: Any) -> Any:
        body = {"text": text, "client_msg_id": client_msg_id or uuid.uuid4().hex, **extra}
        answer = await self.http.post(f"/v1/conversations/{conversation_id}/messages", json=body, headers=self.headers)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    async def dm(self, to: str, text: str, client_msg_id: str | None = None) -> httpx.Response:
        body = {"text": text, "client_msg_id": client_msg_id or uuid.uuid4().hex}
        return await self.http.post(f"/v1/conversations/direct/{to}/messages", json=body, headers=self.headers)

    async def messages(self, conversation_id: str, **params: Any) -> list[dict[str, Any]]:
        answer = await self.http.get(
            f"/v1/conversations/{conversation_id}/messages", params={"limit": 1000, **params}, headers=self.headers
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    async def sync(self, since: str | None = None, **params: Any) -> dict[str, Any]:
        query = {**params, **({"since": since} if since else {})}
        answer = await self.http.get("/v1/sync", params=query, headers=self.headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def user_id_of(tokens: dict[str, str]) -> str:
    payload = tokens["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


async def messaging_db(stack: Stack) -> asyncpg.Connection:
    return await asyncpg.connect(stack.messaging_db.dsn, server_settings={"search_path": stack.messaging_db.schema})


async def members(stack: Stack, count: int, http: httpx.AsyncClient | None = None, **login: Any) -> list[Member]:
    """``count`` new users, once the messaging service has learned of them from auth's events."""
    http = http or stack.http
    made = []
    for index in range(count):
        email = f"m{index}-{uuid.uuid4().hex[:8]}@example.org"
        tokens = await stack.register_and_login(email, http=http, **login)
        made.append(Member(http, user_id_of(tokens), stack.bearer(tokens), tokens, email))
    conn = await messaging_db(stack)
    try:

        async def all_known() -> bool:
            return len(await store.known_users(conn, [m.id for m in made])) == count

        await wait_until(all_known, what="messaging knows the new users")
    finally:
        await conn.close()
    return made


async def start_direct(sender: Member, to: Member, text: str = "hello") -> str:
    sent = await sender.dm(to.id, text)
    assert sent.status_code == 201, sent.text
    return str(sent.json()["conversation_id"])


async def sync_all(member: Member, since: str | None = None, limit: int = 500) -> tuple[list[dict[str, Any]], str]:
    """Every entry after ``since``, page by page; and the token after the last."""
    entries: list[dict[str, Any]] = []
    while True:
        page = await member.sync(since, limit=limit)
        assert not page["limited"], page["gap"]
        entries += page["entries"]
        since = page["next"]
        if not page["more"]:
            return entries, since
