"""Verified access tokens are kept until they expire, and no longer."""

from __future__ import annotations

from fog_gateway.security import VerifiedTokens
from fog_shared.tokens import AccessClaims


def claims(expires_at: int) -> AccessClaims:
    return AccessClaims(
        subject="ann", token_id="t", session_id="s", roles=("user",), issued_at=0, expires_at=expires_at
    )


def test_a_token_is_kept_until_it_expires() -> None:
    now = [100.0]
    kept = VerifiedTokens(clock=lambda: now[0])
    kept.put(b"a", claims(expires_at=110))
    assert kept.get(b"a") == claims(110)
    now[0] = 110.0
    assert kept.get(b"a") is None, "expired: verified again, and refused"


def test_the_least_recently_used_goes_first_and_new_keys_drop_everything() -> None:
    kept = VerifiedTokens(max_entries=2, clock=lambda: 0.0)
    kept.put(b"a", claims(10))
    kept.put(b"b", claims(10))
    assert kept.get(b"a") is not None
    kept.put(b"c", claims(10))
    assert (kept.get(b"a") is not None, kept.get(b"b"), kept.get(b"c") is not None) == (True, None, True)
    kept.clear()
    assert kept.get(b"a") is None
