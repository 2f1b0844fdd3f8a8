"""Reading what another version sent: fields this gateway does not know are dropped, not refused.

Services are rolled out one at a time, and node owners upgrade their agents when they choose, so
the gateway meets newer peers. Contracts change additively within a version (docs/architecture.md),
and the models refuse unknown fields (``Strict``) so that a typo in a request is an error. Read
that way, a service's reply with a field this gateway does not know yet made every such request a
500, and a newer agent's heartbeat was refused, which took its node down.

So what the gateway *reads* from its peers (service replies, agents' messages) is validated with
``extra="ignore"``: every known field is checked as strictly as before, an unknown one is left out.
What people send it (request bodies) stays strict: 422 for a field the API does not have.
"""

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def read(model: type[M], data: Any) -> M:
    """``data`` (decoded JSON from a peer) as ``model``, leaving out the fields it does not have."""
    return model.model_validate(data, extra="ignore")


def read_as(adapter: TypeAdapter[T], data: Any) -> T:
    """As :func:`read`, for a type that is not one model (a union of messages, say)."""
    return adapter.validate_python(data, extra="ignore")


class RepliesReadTolerantly(APIRoute):
    """A route whose dict answer (a service's reply, usually) is read as its ``response_model``
    with unknown fields left out, before FastAPI checks it against the same model."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        model = kwargs.get("response_model")
        if isinstance(model, type) and issubclass(model, BaseModel) and inspect.iscoroutinefunction(endpoint):
            endpoint = _reading_answers_as(model, endpoint)
        super().__init__(path, endpoint, **kwargs)


def _reading_answers_as(model: type[BaseModel], endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    # functools.wraps keeps the signature FastAPI reads the route's parameters from (it unwraps).
    @functools.wraps(endpoint)
    async def answer(*args: Any, **kwargs: Any) -> Any:
        result = await endpoint(*args, **kwargs)
        return read(model, result) if isinstance(result, dict) else result

    return answer
