"""When ``FogClient`` tries a call again, by itself, instead of raising.

A call is tried again (``RETRIES`` times at most, waiting between) when it cannot have done anything yet, or when
doing it twice does no harm:

- the connection could not be made (the gateway restarting, say): the request was never sent;
- 429: the gateway's rate limit turned it away before it went further; its ``Retry-After`` is honoured (one over
  ``MAX_WAIT_S``, an account locked for minutes, is raised at once);
- 502, 503, 504, or a connection cut before the answer, for idempotent calls alone (GET, HEAD, PUT, and a submit
  that carries an idempotency key): a service restarting during a rollout answers 503 for a moment, and a POST
  that reached it may have been done.

A timeout is never tried again: the gateway, or the service behind it, is slow, and would be given more to do.
"""

from __future__ import annotations

import random

import httpx

RETRIES = 3
#: the longest wait between two tries, whatever ``Retry-After`` asks
MAX_WAIT_S = 10.0
FIRST_WAIT_S = 0.25
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT"})
#: failures before the request left: trying again cannot do it twice
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: the connection went before the answer came: the request may have been done
CUT_SHORT = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
RETRIED_STATUSES = frozenset({502, 503, 504})


def worth_another_try(status: int, *, idempotent: bool) -> bool:
    return status == 429 or (idempotent and status in RETRIED_STATUSES)


def error_worth_another_try(exc: httpx.TransportError, *, idempotent: bool) -> bool:
    return isinstance(exc, NOT_SENT) or (idempotent and isinstance(exc, CUT_SHORT))


def pause_before(retry: int, retry_after: float | None) -> float | None:
    """How long to wait before try ``retry`` + 1 (the first retry is 0): what the gateway asked, or a doubling wait
    with jitter, so that clients turned away together do not all come back at once. None when the gateway asked
    for longer than ``MAX_WAIT_S`` (an account locked for minutes): that is the caller's to hear at once."""
    if retry_after is not None:
        return max(retry_after, 0.0) if retry_after <= MAX_WAIT_S else None
    doubled: float = min(FIRST_WAIT_S * 2**retry, MAX_WAIT_S)
    return doubled * random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not a secret
