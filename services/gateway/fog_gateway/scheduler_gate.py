"""When the scheduler does not answer, one node session of the gateway asks again, and the others wait for it.

Each node connection asks the scheduler for its outstanding assignments and records its agent's job reports, and
asks again while the scheduler does not answer (a restart, an outage, NATS reconnecting). Each on its own, 10,000
connections of a gateway made ~1,000 requests a second at the longest wait, every one answered "no responders",
for as long as the scheduler was away. With the gate, one session at a time (the *prober*) tries again on the
gateway's :class:`RetryDelays`; the others wait until a call goes through, then try again spread over as long as
the gateway was last waiting between tries, so that they do not all come back in the same instant.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from fog_gateway.problems import Problem
from fog_shared.bus.rpc import ServiceUnavailable

#: first wait before asking the scheduler again (a job report, the catch-up) when it did not answer
RETRY_S = 0.5
#: the longest wait between two such tries
RETRY_MAX_S = 10.0
_jitter = random.Random()  # noqa: S311 - spreading retries, not a secret
T = TypeVar("T")


class RetryDelays:
    """The waits between tries of a call the scheduler did not answer: ``RETRY_S`` doubling up to
    ``RETRY_MAX_S``, each drawn between half of it and all of it, so that retries spread out."""

    def __init__(self, rng: random.Random = _jitter) -> None:
        self.rng, self.tries, self.ceiling = rng, 0, RETRY_S

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        self.tries += 1
        ceiling, self.ceiling = self.ceiling, min(self.ceiling * 2, RETRY_MAX_S)
        return self.rng.uniform(ceiling / 2, ceiling)


class SchedulerGate:
    """Whether the scheduler answered this gateway's node sessions lately, and whose turn it is to ask again."""

    def __init__(self, rng: random.Random = _jitter) -> None:
        self.rng = rng
        self._away = False
        self._prober: asyncio.Task[Any] | None = None
        self._delays = RetryDelays(rng)
        self._changed = asyncio.Event()
        #: how long the sessions that waited take to come back, in all (the last wait between the prober's tries)
        self._spread_s = 0.0

    @property
    def away(self) -> bool:
        return self._away

    def answered(self) -> None:
        """A call went through: the scheduler is there, and the sessions waiting for it ask again."""
        if self._away:
            self._away, self._prober = False, None
            self._spread_s, self._delays = self._delays.ceiling / 2, RetryDelays(self.rng)
            self._wake()

    async def wait_to_retry(self) -> None:
        """After a call the scheduler did not answer: return when this session may ask again.

        The first session to get here becomes the prober and waits the gateway's next delay; the others wait until
        the scheduler answers it (then a moment drawn within ``_spread_s``), or until the prober's task ends (its
        connection closed), when one of them becomes the prober.
        """
        self._away = True
        me = asyncio.current_task()
        assert me is not None
        while self._away:
            if self._prober is None:
                self._prober = me
                me.add_done_callback(self._prober_gone)
            if self._prober is me:
                await asyncio.sleep(next(self._delays))  # the retry period, not synchronisation
                return
            await self._changed.wait()
        await asyncio.sleep(self.rng.uniform(0, self._spread_s))  # spreading the comeback, not synchronisation

    def _prober_gone(self, task: asyncio.Task[Any]) -> None:
        if self._prober is task:
            self._prober = None
            self._wake()  # one of the waiting sessions takes over

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class Retries:
    """One session's tries of one call: after a try the scheduler did not answer, the next waits for the gate;
    after one it answered with an error, for this call's own :class:`RetryDelays`."""

    def __init__(self, gate: SchedulerGate) -> None:
        self.gate, self.tries, self.delays = gate, 0, RetryDelays(gate.rng)
        self._unanswered = False

    @property
    def first_try(self) -> bool:
        return self.tries == 0

    async def ask(self, call: Awaitable[T]) -> T:
        """``call``, telling the gate whether the scheduler answered it (an error it answered is an answer)."""
        try:
            result = await call
        except ServiceUnavailable:
            self._unanswered = True
            raise
        except Problem:
            self._unanswered = False
            self.gate.answered()
            raise
        self.gate.answered()
        return result

    async def wait(self) -> None:
        """Until the next try."""
        self.tries += 1
        if self._unanswered:
            await self.gate.wait_to_retry()
        else:
            await asyncio.sleep(next(self.delays))  # the retry period, not synchronisation
