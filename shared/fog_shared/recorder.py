"""What a block of code noted while it ran, without passing a list through every call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Generic, TypeVar

T = TypeVar("T")


class ContextRecorder(Generic[T]):
    """:meth:`note` adds to the list of the innermost :meth:`recording` of the current context,
    and does nothing outside one (tasks started inside a recording share its list)."""

    def __init__(self, name: str) -> None:
        self._current: ContextVar[list[T] | None] = ContextVar(name, default=None)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[T]]:
        noted: list[T] = []
        token = self._current.set(noted)
        try:
            yield noted
        finally:
            self._current.reset(token)

    def note(self, items: Iterable[T]) -> None:
        noted = self._current.get()
        if noted is not None:
            noted.extend(items)
