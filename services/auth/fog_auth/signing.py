"""Signing keys and access tokens: Ed25519 (EdDSA), one active key, older ones still published.

Pure apart from key generation: the clock and the token id come in as arguments. Verification is
:func:`fog_shared.tokens.verify_access_token`, the same code the gateway runs.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fog_shared.tokens import ACCESS_TOKEN_TYPE


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: int
    #: after this the key signs nothing; it is published until every token it signed has expired
    retired_at: int | None = None

    @classmethod
    def generate(cls, kid: str, now: int) -> SigningKey:
        return cls(kid, Ed25519PrivateKey.generate(), now)

    def public_jwk(self) -> dict[str, str]:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}


def jwks(keys: Iterable[SigningKey], *, now: int, token_ttl_s: int) -> dict[str, list[dict[str, str]]]:
    """The active key and every retired key that may still have live tokens."""
    return {"keys": [key.public_jwk() for key in keys if key.retired_at is None or key.retired_at + token_ttl_s > now]}


def active_key(keys: Sequence[SigningKey]) -> SigningKey:
    """The newest key not retired: the one that signs."""
    candidates = [key for key in keys if key.retired_at is None]
    if not candidates:
        raise LookupError("no active signing key")
    return max(candidates, key=lambda key: key.created_at)


def issue_access_token(
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    roles: Sequence[str],
    token_id: str,
    now: int,
    ttl_s: int,
    session_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    claims: dict[str, Any] = {
        **(extra or {}),
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "jti": token_id,
        "iat": now,
        "exp": now + ttl_s,
        "roles": list(roles),
    }
    if session_id is not None:
        claims["sid"] = session_id
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})


class KeyVault:
    """Seals private keys for the database and opens them again, caching what it opened.

    With a passphrase (``FOG_AUTH_SIGNING_KEY_PASSPHRASE``, from a Secret) keys are stored as
    encrypted PKCS#8 (scrypt + AES-256-CBC, the ``cryptography`` library's best available), so a
    database dump alone cannot sign tokens. Keys written before a passphrase was set still open.
    Opening costs a key derivation, hence the cache: a key never changes once written.
    """

    def __init__(self, passphrase: bytes | None = None) -> None:
        self._passphrase = passphrase
        self._opened: dict[tuple[str, bytes], Ed25519PrivateKey] = {}

    def seal(self, key: SigningKey) -> bytes:
        protection: serialization.KeySerializationEncryption = serialization.NoEncryption()
        if self._passphrase:
            protection = serialization.BestAvailableEncryption(self._passphrase)
        return key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection)

    def open(self, kid: str, pem: bytes) -> Ed25519PrivateKey:
        cached = self._opened.get((kid, pem))
        if cached is not None:
            return cached
        encrypted = b"ENCRYPTED" in pem.split(b"\n", 1)[0]
        if encrypted and not self._passphrase:
            raise ValueError(f"signing key {kid} is encrypted: set the signing-key passphrase")
        key = serialization.load_pem_private_key(pem, password=self._passphrase if encrypted else None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"signing key {kid} is not Ed25519")
        self._opened[(kid, pem)] = key
        return key
