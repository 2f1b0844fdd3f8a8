"""What the agent tells its node's owner over BitChat: what they would want to know without reading its log.

A node may message its owner alone (``POST /v1/conversations/direct/owner/messages`` with its credential; the
owner reads it with ``fogctl chat read``, from ``node:<id>``). ``tell`` never blocks nor fails the caller: the
message waits in a short queue, and a task sends it, again and again with backoff while the gateway cannot be
reached, each try with the same ``client_msg_id`` (a message that reached the service once is stored once). A
refusal (4xx) is logged and the message dropped. Past ``QUEUE_MAX`` waiting, the oldest is dropped, said in the
log: a node cut off from its gateway for hours does not pile them up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from contextlib import suppress

import httpx

log = logging.getLogger(__name__)

#: messages waiting to be sent, at most
QUEUE_MAX = 20
#: between two tries of a message the gateway did not take, at first; doubled up to ``RETRY_MAX_S``
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
#: what one try may take
SEND_TIMEOUT_S = 10.0
#: on the agent's way out, how long the messages still waiting may take to go
CLOSE_WAIT_S = 5.0
#: the longest text BitChat takes (16 KiB of UTF-8); longer is cut
MAX_TEXT_CHARS = 4000


class OwnerMessages:
    """Messages from this node to its owner, sent in the background (see the module)."""

    def __init__(self, gateway_url: str, credential: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(
            base_url=gateway_url, headers={"Authorization": f"Bearer {credential}"}, timeout=SEND_TIMEOUT_S,
            transport=transport,
        )  # fmt: skip
        self._waiting: collections.deque[tuple[str, str]] = collections.deque()  # (client_msg_id, text)
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.retry_first_s = RETRY_FIRST_S

    def tell(self, text: str) -> None:
        """Send ``text`` to the owner, soon: from the event loop's thread, or before the loop runs (what is told
        then goes once ``start`` is called in it)."""
        if len(self._waiting) >= QUEUE_MAX:
            _, dropped = self._waiting.popleft()
            log.warning("too many messages for the owner wait to be sent; dropped the oldest: %s", dropped)
        self._waiting.append((str(uuid.uuid4()), text[:MAX_TEXT_CHARS]))
        self._more.set()
        with suppress(RuntimeError):  # no loop runs yet: start() sends it
            asyncio.get_running_loop()
            self.start()

    def start(self) -> None:
        """Send what waits, if it is not being sent; in the event loop."""
        if self._waiting and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._send_all(), name="owner-messages")

    async def close(self) -> None:
        """Give what waits ``CLOSE_WAIT_S`` to go, then stop."""
        if self._task is not None and not self._task.done() and self._waiting:
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained()), CLOSE_WAIT_S)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _drained(self) -> None:
        while self._waiting:
            self._more.clear()
            await self._more.wait()

    async def _send_all(self) -> None:
        while self._waiting:
            message_id, text = self._waiting[0]
            await self._send(message_id, text)
            if self._waiting and self._waiting[0][0] == message_id:  # not dropped meanwhile
                self._waiting.popleft()
            self._more.set()  # wakes close(), which waits for the queue to empty

    async def _send(self, message_id: str, text: str) -> None:
        """One message, tried until the gateway answers it (taken, or refused for good)."""
        pause = self.retry_first_s
        while True:
            try:
                answer = await self._client.post(
                    "/v1/conversations/direct/owner/messages", json={"text": text, "client_msg_id": message_id}
                )
            except httpx.TransportError as exc:
                log.info("the owner's message waits: the gateway cannot be reached (%s)", exc)
            else:
                if answer.status_code < 400:
                    return
                if answer.status_code < 500 and answer.status_code != 429:
                    log.warning("the gateway refused a message to the owner (%d): %s", answer.status_code, answer.text)
                    return
                log.info("the owner's message waits: the gateway answered %d", answer.status_code)
            await asyncio.sleep(pause)
            pause = min(RETRY_MAX_S, pause * 2)
