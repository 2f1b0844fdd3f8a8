"""Syncs asked together: the live streams and long-polls that one change wakes on this gateway
ask messaging once, with ``sync_many``, instead of once each.

A message to a group of fifty wakes fifty streams at the same moment. Each still asks for its
own sync (so each gets exactly what it has not had, from its own token), but :class:`SyncBatcher`
gathers the asks that arrive while earlier ones are being answered into one request. At rest a
sync goes out at once, alone; under load the batches grow, and the round trips per delivery fall.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, get_args

from fog_gateway.calls import ServiceCalls, problem_for
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.commands import messaging as contract
from fog_shared.commands.common import refusal_in

KNOWN_KINDS = frozenset(get_args(contract.EntryKind))


@dataclass(frozen=True, slots=True)
class Synced:
    """One caller's sync, shaped like a :class:`~contract.SyncReply`; its entries come with their
    JSON text, made once per batch for everyone they concern."""

    entries: list[dict[str, Any]]
    texts: list[str]
    next: str
    limited: bool
    gap: dict[str, Any] | None
    more: bool

    def reply(self) -> dict[str, Any]:
        """As ``GET /v1/sync`` answers it. Its schema lists the kinds of entry: one of a kind this gateway does not
        know (a newer messaging's, during a rollout) is left out, as unknown fields are (``fog_gateway.tolerant``);
        ``next`` still passes it. A live stream's frame passes such entries on: clients skip kinds they do not know.
        """
        entries = [entry for entry in self.entries if entry.get("kind") in KNOWN_KINDS]
        return {"entries": entries, "next": self.next, "limited": self.limited, "gap": self.gap, "more": self.more}

    def frame(self) -> str:
        """As a live stream sends it: a ``sync`` frame (the entries' text is not made again)."""
        rest = _compact({"next": self.next, "limited": self.limited, "gap": self.gap, "more": self.more})
        return f'{{"type":"sync","entries":[{",".join(self.texts)}],{rest[1:]}'


def fed_frame(texts: list[str], through: int) -> str:
    """A ``sync`` frame of entries the timeline chain brought, each already JSON text: everything
    up to ``through`` is sent with it."""
    token = contract.sync_token(through)
    return f'{{"type":"sync","entries":[{",".join(texts)}],"next":"{token}","limited":false,"gap":null,"more":false}}'


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class _Ask:
    query: contract.SyncQuery
    answer: asyncio.Future[Synced]


class SyncBatcher:
    def __init__(self, calls: ServiceCalls, *, max_batch: int = 200, in_flight: int = 2) -> None:
        assert 1 <= max_batch <= contract.MAX_SYNC_BATCH
        self.calls, self.max_batch = calls, max_batch
        self._waiting: list[_Ask] = []
        self._has_waiting = asyncio.Event()
        self._slots = asyncio.Semaphore(in_flight)
        self._asking: set[asyncio.Task[None]] = set()
        #: sync_many requests sent and the syncs they carried, for tests and metrics
        self.requests = 0
        self.syncs = 0

    async def sync(self, query: contract.SyncQuery) -> Synced:
        """The query's sync, as ``calls.ask(SYNC, query)`` would give it: a refusal raises its
        :class:`~fog_gateway.problems.Problem`, no answer :class:`ServiceUnavailable`."""
        answer: asyncio.Future[Synced] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Ask(query, answer))
        self._has_waiting.set()
        return await answer

    async def run(self) -> None:
        """Send the waiting syncs in batches, at most ``in_flight`` requests at a time, until cancelled."""
        try:
            while True:
                await self._has_waiting.wait()
                await self._slots.acquire()
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                if not self._waiting:
                    self._has_waiting.clear()
                batch = [ask for ask in batch if not ask.answer.done()]  # a closed stream stops waiting
                if not batch:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._ask(batch))
                self._asking.add(task)
                task.add_done_callback(self._asking.discard)
        finally:
            for task in list(self._asking):
                task.cancel()
            for ask in self._waiting:
                ask.answer.cancel()

    async def _ask(self, batch: list[_Ask]) -> None:
        try:
            self.requests, self.syncs = self.requests + 1, self.syncs + len(batch)
            try:
                query = contract.SyncManyQuery(queries=[ask.query for ask in batch])
                reply = await self.calls.ask(contract.SYNC_MANY, query)
            except Exception as failed:  # unavailable, or refused as a whole: each ask fails alike
                for ask in batch:
                    _settle(ask, error=failed)
                return
            try:
                synced = _parts(reply, len(batch))
            except (KeyError, TypeError, ValueError):
                mismatch = ServiceUnavailable(contract.SYNC_MANY, "an answer that does not match the request")
                synced = [mismatch for _ in batch]
            for ask, one in zip(batch, synced, strict=True):
                if isinstance(one, BaseException):
                    _settle(ask, error=one)
                else:
                    _settle(ask, result=one)
        finally:
            self._slots.release()


def _parts(reply: dict[str, Any], expected: int) -> list[Synced | BaseException]:
    """Each query's :class:`Synced`, or the problem it was refused with."""
    by_position = {entry["position"]: entry for entry in reply["entries"]}
    texts: dict[int, str] = {}
    parts: list[Synced | BaseException] = []
    if len(reply["replies"]) != expected:
        raise ValueError("one reply per query")
    for part in reply["replies"]:
        refusal = refusal_in(part)
        if refusal is not None:
            parts.append(problem_for(refusal))
            continue
        positions = part["positions"]
        for position in positions:
            if position not in texts:
                texts[position] = _compact(by_position[position])
        parts.append(
            Synced(
                entries=[by_position[p] for p in positions],
                texts=[texts[p] for p in positions],
                next=part["next"],
                limited=part["limited"],
                gap=part.get("gap"),
                more=part["more"],
            )
        )
    return parts


def _settle(ask: _Ask, *, result: Synced | None = None, error: BaseException | None = None) -> None:
    if ask.answer.done():
        return
    if error is not None:
        ask.answer.set_exception(error)
    else:
        assert result is not None
        ask.answer.set_result(result)
