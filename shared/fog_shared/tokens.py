"""Access-token verification, shared by every verifier (the gateway first of all).

Rules from RFC 8725 (JWT best current practices) and RFC 9068 (JWT access tokens):

* the algorithm comes from an explicit allow-list (``EdDSA``), never from the token: ``alg:
  none`` and ``HS256`` signed with the public key are refused before any key is touched;
* ``typ`` must be ``at+jwt``, so an ID token or another JWT cannot pass for an access token;
* the key is chosen by ``kid`` from the issuer's JWKS only; an unknown ``kid`` is refused (the
  caller may refresh its JWKS, rate limited, and try once more);
* ``iss``, ``aud``, ``exp``, ``iat``, ``sub`` and ``jti`` are required and checked.

Signing lives in the auth service; this module only verifies.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK

ALGORITHMS = ("EdDSA",)
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub", "jti")


class TokenError(ValueError):
    """The token is not acceptable; ``reason`` is safe to log (never the token itself)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKey(TokenError):
    """Signed with a ``kid`` this verifier does not know (yet): refresh the JWKS, then retry."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    token_id: str
    session_id: str | None
    roles: tuple[str, ...]
    issued_at: int
    expires_at: int
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeySet:
    """Verification keys by ``kid``, built from a JWKS document."""

    keys: Mapping[str, PyJWK]

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any]) -> KeySet:
        keys = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                keys[jwk["kid"]] = PyJWK.from_dict(dict(jwk), algorithm="EdDSA")
        return cls(keys)


def verify_access_token(
    token: str, keys: KeySet, *, issuer: str, audience: str, now: float | None = None, leeway_s: float = 0
) -> AccessClaims:
    header = _header(token)
    if header.get("alg") not in ALGORITHMS:
        raise TokenError(f"algorithm {header.get('alg')!r} is not allowed")
    if header.get("typ") != ACCESS_TOKEN_TYPE:
        raise TokenError(f"token type {header.get('typ')!r} is not {ACCESS_TOKEN_TYPE}")
    kid = header.get("kid")
    key = keys.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise UnknownKey(f"unknown signing key {kid!r}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(ALGORITHMS),
            audience=audience,
            issuer=issuer,
            leeway=leeway_s,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenError(type(exc).__name__) from None
    return _checked_times(claims, time.time() if now is None else now, leeway_s)


def _header(token: str) -> dict[str, Any]:
    try:
        header: dict[str, Any] = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenError("malformed token") from None
    return header


def _checked_times(claims: dict[str, Any], now: float, leeway_s: float) -> AccessClaims:
    # Times are checked here, against a clock the caller passes, so tests need no sleeping.
    expires_at, issued_at = claims["exp"], claims["iat"]
    if not isinstance(expires_at, int) or not isinstance(issued_at, int):
        raise TokenError("exp and iat must be integers")
    if now >= expires_at + leeway_s:
        raise TokenError("token expired")
    if issued_at > now + leeway_s:
        raise TokenError("token issued in the future")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("roles must be a list of strings")
    known = {*REQUIRED_CLAIMS, "roles", "sid"}
    return AccessClaims(
        subject=str(claims["sub"]),
        token_id=str(claims["jti"]),
        session_id=claims.get("sid"),
        roles=tuple(roles),
        issued_at=issued_at,
        expires_at=expires_at,
        extra={k: v for k, v in claims.items() if k not in known},
    )
