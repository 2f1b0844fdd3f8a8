"""API keys and node credentials: long-lived bearer secrets, and what each one stands for.

A secret is ``fogk_…`` (API key) or ``fogn_…`` (node credential) followed by 256 random bits;
only its SHA-256 is stored. :func:`introspect` answers the gateway's question "who is this?",
which the gateway caches until a revocation event tells it otherwise.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime

import asyncpg

from fog_auth import credential_store, domain, store
from fog_auth.service import SOURCE, AuthError, parse_id
from fog_shared.commands import auth as contract
from fog_shared.events.auth import ApiKeyRevoked, NodeCredentialIssued, NodeCredentialRevoked
from fog_shared.pg import outbox


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _key_view(row: asyncpg.Record) -> contract.ApiKeyView:
    return contract.ApiKeyView(**{**dict(row), "id": str(row["id"])})


async def create_api_key(
    conn: asyncpg.Connection, *, user_id: str, request: contract.ApiKeyCreateRequest, now: datetime
) -> contract.CreatedApiKey:
    owner = await store.user_by_id(conn, parse_id(user_id, "user"))
    if owner is None or owner.disabled:
        raise AuthError("not_found", "no such user")
    if not domain.scope_allowed(set(request.scopes), set(owner.roles)):
        raise AuthError("scope_exceeds_roles", f"an API key may carry only your roles: {', '.join(owner.roles)}")
    if request.expires_at is not None and request.expires_at <= now:
        raise AuthError("invalid_expiry", "expires_at must be in the future")
    secret = new_secret(contract.API_KEY_PREFIX)
    row = await credential_store.insert_api_key(
        conn, uuid.uuid4(), owner.id, request.name, hash_secret(secret), sorted(set(request.scopes)), now,
        request.expires_at,
    )  # fmt: skip
    view = _key_view(row)
    return contract.CreatedApiKey(
        id=view.id, name=view.name, scopes=view.scopes, created_at=view.created_at, expires_at=view.expires_at,
        key=secret,
    )  # fmt: skip


async def list_api_keys(conn: asyncpg.Connection, *, user_id: str) -> contract.ApiKeyList:
    rows = await credential_store.api_keys_of(conn, parse_id(user_id, "user"))
    return contract.ApiKeyList(items=[_key_view(r) for r in rows])


async def revoke_api_key(conn: asyncpg.Connection, *, user_id: str, api_key_id: str, now: datetime) -> None:
    key_id, owner_id = parse_id(api_key_id, "API key"), parse_id(user_id, "user")
    async with conn.transaction():
        if not await credential_store.revoke_api_key(conn, key_id, owner_id, now):
            raise AuthError("not_found", "no such API key")
        event = ApiKeyRevoked(api_key_id=str(key_id), user_id=str(owner_id), revoked_at=now)
        await outbox.record(conn, event, source=SOURCE)


async def issue_node_credential(
    conn: asyncpg.Connection, *, node_id: str, owner_id: str, now: datetime
) -> contract.IssuedNodeCredential:
    """A new credential for the node; any earlier one stops working. The first provider to get a
    credential for a node id owns it: nobody else can take it over."""
    owner_uuid = parse_id(owner_id, "user")
    async with conn.transaction():
        owner = await store.user_by_id(conn, owner_uuid)
        if owner is None or owner.disabled or "provider" not in owner.roles:
            raise AuthError("forbidden", "only a provider can hold node credentials")
        current_owner = await credential_store.node_owner(conn, node_id)
        if current_owner is None:
            await credential_store.insert_node_owner(conn, node_id, owner_uuid, now)
        elif current_owner != owner_uuid:
            raise AuthError("forbidden", "this node belongs to another provider")
        await _revoke_node_credentials(conn, node_id, owner_uuid, "replaced", now)
        secret, credential_id = new_secret(contract.NODE_CREDENTIAL_PREFIX), uuid.uuid4()
        await credential_store.insert_node_credential(conn, credential_id, node_id, hash_secret(secret), now)
        event = NodeCredentialIssued(
            node_id=node_id, owner_id=str(owner_uuid), credential_id=str(credential_id), issued_at=now
        )
        await outbox.record(conn, event, source=SOURCE)
    return contract.IssuedNodeCredential(node_id=node_id, credential=secret, issued_at=now)


async def revoke_node_credential(
    conn: asyncpg.Connection, *, node_id: str, by: contract.Principal, now: datetime
) -> None:
    async with conn.transaction():
        owner = await credential_store.node_owner(conn, node_id)
        allowed = owner is not None and domain.may_revoke_node_credential(
            kind=by.kind, user_id=by.user_id, node_id=by.node_id, roles=by.roles, owner_id=str(owner),
            target_node=node_id,
        )  # fmt: skip
        if owner is None or not allowed:
            raise AuthError("not_found", "no such node credential")  # another's node looks like none
        if not await _revoke_node_credentials(conn, node_id, owner, "revoked", now):
            raise AuthError("not_found", "no such node credential")


async def _revoke_node_credentials(
    conn: asyncpg.Connection, node_id: str, owner_id: uuid.UUID, reason: str, now: datetime
) -> int:
    revoked = await credential_store.revoke_node_credentials(conn, node_id, now)
    for credential_id in revoked:
        event = NodeCredentialRevoked(
            node_id=node_id, owner_id=str(owner_id), credential_id=str(credential_id), reason=reason, revoked_at=now
        )
        await outbox.record(conn, event, source=SOURCE)
    return len(revoked)


async def introspect(conn: asyncpg.Connection, *, credential: str, now: datetime) -> contract.IntrospectReply:
    """Who an API key or node credential stands for, if it is live; notes when it was last used."""
    secret_hash = hash_secret(credential)
    if credential.startswith(contract.API_KEY_PREFIX):
        key = await credential_store.api_key_by_hash(conn, secret_hash)
        if key is None or key.revoked_at or key.owner_disabled or (key.expires_at and key.expires_at <= now):
            raise AuthError("invalid_credential", "the API key is not valid")
        await credential_store.touch_api_key(conn, key.id, now)
        principal = contract.Principal(
            kind="api_key", user_id=str(key.user_id), roles=domain.api_key_roles(key.scopes, key.owner_roles),
            api_key_id=str(key.id),
        )  # fmt: skip
        return contract.IntrospectReply(principal=principal, expires_at=key.expires_at)
    if credential.startswith(contract.NODE_CREDENTIAL_PREFIX):
        node = await credential_store.node_credential_by_hash(conn, secret_hash)
        if node is None or node.revoked_at or node.owner_disabled:
            raise AuthError("invalid_credential", "the node credential is not valid")
        await credential_store.touch_node_credential(conn, node.id, now)
        principal = contract.Principal(kind="node", node_id=node.node_id, roles=["node"], credential_id=str(node.id))
        return contract.IntrospectReply(principal=principal)
    raise AuthError("invalid_credential", "not an API key or node credential")
