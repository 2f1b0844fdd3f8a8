"""The key directory's rules: when a published key makes a device another one, and a signed prekey's check."""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fog_messaging.domain.common import Rejected


def replaces_identity(current: str | None, published: str) -> bool:
    """A device publishing another identity key is a new device under the old id (reinstalled):
    what belonged to the old identity (its unclaimed prekeys) must not be handed out with it."""
    return current is not None and current != published


def replaces_signing_key(current: str | None, published: str | None) -> bool:
    """Another signing key is another device too; a first one (a device from before signing keys) is not, and an
    upload without one keeps the device's."""
    return current is not None and published is not None and current != published


def check_signed_prekey(signing_key: str, public_key: str, signature: str) -> None:
    """The signed prekey's signature is the signing key's, over the prekey's 32 bytes (base64 all three, checked
    for length by the contract). Else refused: a sender must never be handed a prekey its device did not sign."""
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(signing_key)).verify(
            base64.b64decode(signature), base64.b64decode(public_key)
        )
    except (InvalidSignature, ValueError):
        raise Rejected("invalid_signature", "the signed prekey's signature is not its signing key's") from None
