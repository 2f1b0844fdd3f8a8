"""Access tokens: what the verifier accepts and the forgeries it refuses (RFC 8725)."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from fog_auth.signing import KeyVault, SigningKey, active_key, issue_access_token, jwks
from fog_shared.tokens import KeySet, TokenError, UnknownKey, verify_access_token

ISS, AUD, NOW, TTL = "fog-auth", "fog", 1_800_000_000, 600


def token(key: SigningKey, **overrides: object) -> str:
    args: dict[str, object] = {
        "issuer": ISS, "audience": AUD, "subject": "u1", "roles": ["user"], "token_id": "t1",
        "now": NOW, "ttl_s": TTL, "session_id": "s1",
    }  # fmt: skip
    args.update(overrides)
    return issue_access_token(key, **args)  # type: ignore[arg-type]


def keyset(*keys: SigningKey) -> KeySet:
    return KeySet.from_jwks(jwks(keys, now=NOW, token_ttl_s=TTL))


def verify(raw: str, keys: KeySet, now: int = NOW) -> object:
    return verify_access_token(raw, keys, issuer=ISS, audience=AUD, now=now)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("k1", NOW - 100)


def test_a_token_from_the_active_key_verifies(key: SigningKey) -> None:
    claims = verify_access_token(token(key), keyset(key), issuer=ISS, audience=AUD, now=NOW + 1)
    assert (claims.subject, claims.roles, claims.session_id, claims.token_id) == ("u1", ("user",), "s1", "t1")
    assert claims.expires_at == NOW + TTL


def test_expired_and_future_tokens_are_refused(key: SigningKey) -> None:
    with pytest.raises(TokenError, match="expired"):
        verify(token(key), keyset(key), now=NOW + TTL)
    with pytest.raises(TokenError, match="future"):
        verify(token(key, now=NOW + 60), keyset(key))


def test_a_signature_from_another_key_with_the_same_kid_is_refused(key: SigningKey) -> None:
    impostor = SigningKey.generate("k1", NOW)
    with pytest.raises(TokenError, match="InvalidSignatureError"):
        verify(token(impostor), keyset(key))


def test_a_tampered_payload_is_refused(key: SigningKey) -> None:
    header, payload, signature = token(key).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        verify(f"{header}.{forged}.{signature}", keyset(key))


def test_alg_none_is_refused(key: SigningKey) -> None:
    unsigned = jwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "u1", "jti": "t", "iat": NOW, "exp": NOW + TTL},
        key=None,
        algorithm="none",
        headers={"kid": "k1", "typ": "at+jwt"},
    )
    with pytest.raises(TokenError, match="algorithm 'none' is not allowed"):
        verify(unsigned, keyset(key))


def test_hs256_signed_with_the_public_key_is_refused(key: SigningKey) -> None:
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}).encode())
    claims = {"iss": ISS, "aud": AUD, "sub": "u1", "jti": "t", "iat": NOW, "exp": NOW + TTL}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode())
    signing_input = header.rstrip(b"=") + b"." + body.rstrip(b"=")
    import hmac

    mac = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input, "sha256").digest()).rstrip(b"=")
    with pytest.raises(TokenError, match="algorithm 'HS256' is not allowed"):
        verify((signing_input + b"." + mac).decode(), keyset(key))


def test_unknown_kid_wrong_audience_issuer_and_type_are_refused(key: SigningKey) -> None:
    with pytest.raises(UnknownKey):
        verify(token(SigningKey.generate("k-unknown", NOW)), keyset(key))
    with pytest.raises(TokenError, match="InvalidAudienceError"):
        verify(token(key, audience="elsewhere"), keyset(key))
    with pytest.raises(TokenError, match="InvalidIssuerError"):
        verify(token(key, issuer="someone-else"), keyset(key))
    id_token = jwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "u1", "jti": "t", "iat": NOW, "exp": NOW + TTL},
        key.private_key,
        algorithm="EdDSA",
        headers={"kid": "k1", "typ": "JWT"},
    )
    with pytest.raises(TokenError, match="token type"):
        verify(id_token, keyset(key))
    with pytest.raises(TokenError, match="malformed"):
        verify("not-a-token", keyset(key))


def test_after_rotation_old_tokens_verify_until_they_expire_and_new_ones_use_the_new_key(key: SigningKey) -> None:
    old_token = token(key)
    retired = SigningKey(key.kid, key.private_key, key.created_at, retired_at=NOW)
    new = SigningKey.generate("k2", NOW)
    keys = [retired, new]
    assert active_key(keys).kid == "k2"
    new_token = token(active_key(keys), now=NOW + 10)
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    published = keyset(*keys)
    verify(old_token, published, now=NOW + 10)
    verify(new_token, published, now=NOW + 10)
    # Once every token it signed has expired, the retired key leaves the JWKS.
    later = jwks(keys, now=NOW + TTL + 1, token_ttl_s=TTL)
    assert [k["kid"] for k in later["keys"]] == ["k2"]


@pytest.mark.parametrize("passphrase", [None, b"from a kubernetes secret"])
def test_keys_survive_sealing_and_opening(key: SigningKey, passphrase: bytes | None) -> None:
    sealed = KeyVault(passphrase).seal(key)
    again = SigningKey(key.kid, KeyVault(passphrase).open(key.kid, sealed), key.created_at)
    verify(token(again), keyset(key))


def test_a_sealed_key_is_encrypted_and_needs_its_passphrase(key: SigningKey) -> None:
    sealed = KeyVault(b"right").seal(key)
    assert sealed.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(ValueError, match="encrypted"):
        KeyVault().open(key.kid, sealed)
    with pytest.raises(ValueError, match="Incorrect password"):
        KeyVault(b"wrong").open(key.kid, sealed)
    # Keys stored before a passphrase was configured still open.
    assert KeyVault(b"right").open(key.kid, KeyVault().seal(key))
