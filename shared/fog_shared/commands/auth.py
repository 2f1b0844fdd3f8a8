"""Requests the auth service answers, and its replies. Strict models: no coercion on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fog_shared.subjects import command_subject, query_subject

REGISTER = command_subject("auth", "register")
LOGIN = command_subject("auth", "login")
REFRESH = command_subject("auth", "refresh")
LOGOUT = command_subject("auth", "logout")
JWKS = query_subject("auth", "jwks")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RegisterRequest(_Strict):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    password: str = Field(min_length=1, max_length=1024)


class LoginRequest(_Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    #: the caller's address as the gateway saw it: brute-force counting per source
    source: str = Field(default="unknown", max_length=64)


class RefreshRequest(_Strict):
    refresh_token: str = Field(min_length=1, max_length=256)


class TokenReply(_Strict):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - a scheme, not a secret
    expires_in: int


class RegisteredReply(_Strict):
    user_id: str


class ErrorReply(_Strict):
    """A refused request: a stable ``code`` the gateway maps to an HTTP status."""

    code: str
    detail: str
    retry_after_s: int | None = None


def error(code: str, detail: str, retry_after_s: int | None = None) -> dict[str, Any]:
    return {"error": ErrorReply(code=code, detail=detail, retry_after_s=retry_after_s).model_dump()}
