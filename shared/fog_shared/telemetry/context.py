"""The correlation id of the request or event being handled, carried in a context variable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_correlation_id: ContextVar[str | None] = ContextVar("fog_correlation_id", default=None)


def correlation_id() -> str | None:
    return _correlation_id.get()


@contextmanager
def use_correlation_id(value: str | None) -> Iterator[None]:
    token = _correlation_id.set(value)
    try:
        yield
    finally:
        _correlation_id.reset(token)
