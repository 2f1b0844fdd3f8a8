"""What every request/reply contract shares: strict models, timestamps, the error reply."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field


class Strict(BaseModel):
    """Strict on the wire: no coercion (``"1"`` is not an int), no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _iso_8601_only(value: object) -> object:
    if not isinstance(value, str | datetime):
        raise ValueError("expected an ISO 8601 date-time string")  # not a number of seconds
    return value


NUL = "\x00"


def _refuse_nul(value: str) -> str:
    if NUL in value:
        raise ValueError("must not contain NUL (U+0000), which PostgreSQL cannot store")
    return value


#: a string sent to be stored: PostgreSQL's text and jsonb cannot hold NUL, so it is refused here, as bad
#: input, rather than failing the transaction that would store it
Text = Annotated[str, AfterValidator(_refuse_nul)]


def without_nul(value: str) -> str:
    """What a process printed, made storable: each NUL becomes U+FFFD, as undecodable bytes already are."""
    return value.replace(NUL, "\ufffd") if NUL in value else value


#: JSON has no datetime type: an ISO 8601 string with a time zone is the one lax conversion
#: these strict models allow
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_8601_only), Field(strict=False)]


#: the network a job gets on its node: ``host``, the node's own (what it reaches, the job reaches); ``none``, a
#: network of its own with loopback alone (nothing outside the job, not even the node's ``localhost``)
JobNetwork = Literal["host", "none"]
JOB_NETWORKS: tuple[JobNetwork, ...] = ("host", "none")


class RebuildQuery(Strict):
    """Rebuild one of a service's event-derived read models and compare it with the live one: its first when
    ``read_model`` names none. Replies a :class:`fog_shared.replay.rebuild.RebuildReport`."""

    read_model: str | None = Field(default=None, max_length=64)


class ErrorReply(Strict):
    """A refused request: a stable ``code`` the gateway maps to an HTTP status."""

    code: str
    detail: str
    retry_after_s: int | None = None


class Refusal(Exception):
    """A use case's refusal with a stable ``code``; request handlers answer it as an :class:`ErrorReply`."""

    def __init__(self, code: str, detail: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.retry_after_s = code, detail, retry_after_s

    def reply(self) -> dict[str, Any]:
        return error(self.code, self.detail, self.retry_after_s)


def error(code: str, detail: str, retry_after_s: int | None = None) -> dict[str, Any]:
    return {"error": ErrorReply(code=code, detail=detail, retry_after_s=retry_after_s).model_dump()}


def refusal_in(reply: dict[str, Any]) -> ErrorReply | None:
    """The refusal a reply carries, if it is one (a reply's own ``error`` field, such as a job's
    error message, is not a refusal: refusals are objects with a ``code``)."""
    candidate = reply.get("error")
    if isinstance(candidate, dict) and "code" in candidate:
        return ErrorReply.model_validate(candidate)
    return None
