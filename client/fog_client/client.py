"""``FogClient``: Fog's HTTP API as typed async calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from fog_client.errors import ApiError
from fog_client.models import (
    ApiKey,
    Capabilities,
    CreatedApiKey,
    Items,
    Location,
    Me,
    Node,
    NodeCredential,
    Registered,
    RegisteredNode,
    RotatedKey,
    Tokens,
    User,
)

M = TypeVar("M", bound=BaseModel)
#: a query string; a list value repeats the parameter (``label=a=1&label=b=2``)
Query = Mapping[str, str | int | list[str]]


class FogClient:
    """One gateway, one set of credentials.

    ``api_key`` (an API key or a node credential) is sent as the bearer when given; otherwise the
    session's access token is. A call made with the session that is refused with 401 is retried once
    after refreshing the tokens, when a refresh token is held; ``on_tokens`` hears of every new pair
    (from ``login`` and from refreshes) so that the caller can keep them. Refusals raise ``ApiError``;
    an unreachable gateway raises ``httpx.TransportError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_tokens: Callable[[Tokens], None] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token, self.refresh_token, self.api_key = access_token, refresh_token, api_key
        self.on_tokens = on_tokens
        headers = {"X-Request-ID": request_id} if request_id else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport, headers=headers)
        # Refresh tokens rotate, and presenting a rotated-away one revokes the whole session: calls that
        # hit 401 together must share one refresh instead of racing with the same refresh token.
        self._refreshing = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- accounts and sessions -------------------------------------------------------------------

    async def register(self, email: str, password: str, *, roles: Sequence[str] = ("user",)) -> str:
        """Create an account (roles ``user`` and/or ``provider``); returns its user id."""
        body = {"email": email, "password": password, "roles": list(roles)}
        return _parse(Registered, await self._call("POST", "/v1/auth/register", body, auth=False)).user_id

    async def login(self, email: str, password: str) -> Tokens:
        """Open a session; its tokens are kept for the following calls (and handed to ``on_tokens``)."""
        body = {"email": email, "password": password}
        tokens = _parse(Tokens, await self._call("POST", "/v1/auth/login", body, auth=False))
        self._keep(tokens)
        return tokens

    async def refresh(self) -> Tokens:
        """Trade the refresh token for a new pair (the old refresh token stops working)."""
        if self.refresh_token is None:
            raise RuntimeError("no refresh token: log in first")
        try:
            reply = await self._call("POST", "/v1/auth/refresh", {"refresh_token": self.refresh_token}, auth=False)
        except ApiError as exc:
            if exc.status == 401:  # refused for good: presenting it again could only look like reuse
                self.refresh_token = None
            raise
        tokens = _parse(Tokens, reply)
        self._keep(tokens)
        return tokens

    async def logout(self) -> None:
        """End the session on the server, then forget its tokens."""
        if self.refresh_token is None:
            raise RuntimeError("no refresh token: not logged in")
        await self._call("POST", "/v1/auth/logout", {"refresh_token": self.refresh_token}, auth=False)
        self.access_token = self.refresh_token = None

    async def me(self) -> Me:
        return _parse(Me, await self._call("GET", "/v1/me"))

    # -- API keys --------------------------------------------------------------------------------

    async def create_api_key(
        self, name: str, scopes: Sequence[str], *, expires_at: datetime | None = None
    ) -> CreatedApiKey:
        body = {"name": name, "scopes": list(scopes), "expires_at": expires_at.isoformat() if expires_at else None}
        return _parse(CreatedApiKey, await self._call("POST", "/v1/api-keys", body))

    async def list_api_keys(self) -> list[ApiKey]:
        return _parse(Items[ApiKey], await self._call("GET", "/v1/api-keys")).items

    async def revoke_api_key(self, key_id: str) -> None:
        await self._call("DELETE", f"/v1/api-keys/{_segment(key_id)}")

    # -- administration --------------------------------------------------------------------------

    async def list_users(self, *, limit: int | None = None, offset: int | None = None) -> list[User]:
        """Accounts, oldest first; one page (the gateway's default size unless ``limit`` is given)."""
        page = {k: v for k, v in (("limit", limit), ("offset", offset)) if v is not None}
        return _parse(Items[User], await self._call("GET", "/v1/admin/users", params=page)).items

    async def set_roles(self, user_id: str, roles: Sequence[str]) -> User:
        path = f"/v1/admin/users/{_segment(user_id)}/roles"
        return _parse(User, await self._call("PUT", path, {"roles": list(roles)}))

    async def disable_user(self, user_id: str) -> User:
        return _parse(User, await self._call("POST", f"/v1/admin/users/{_segment(user_id)}/disable"))

    async def rotate_signing_key(self) -> RotatedKey:
        return _parse(RotatedKey, await self._call("POST", "/v1/admin/signing-keys/rotate"))

    # -- nodes -----------------------------------------------------------------------------------

    async def register_node(
        self,
        name: str,
        capabilities: Capabilities,
        *,
        labels: Mapping[str, str] | None = None,
        region: str | None = None,
        location: Location | None = None,
    ) -> RegisteredNode:
        """Offer a machine as a node (a provider's call); the reply holds its credential, shown this once."""
        body = {
            "name": name,
            "capabilities": capabilities.model_dump(mode="json"),
            "labels": dict(labels or {}),
            "region": region,
            "location": location.model_dump(mode="json") if location else None,
        }
        return _parse(RegisteredNode, await self._call("POST", "/v1/nodes", body))

    async def list_nodes(
        self,
        *,
        status: str | None = None,
        labels: Mapping[str, str] | None = None,
        min_cpu_cores: int | None = None,
        min_memory_bytes: int | None = None,
        owner_id: str | None = None,
    ) -> list[Node]:
        """Nodes matching every filter given: a provider sees their own, an admin all of them."""
        filters = {
            "status": status,
            "min_cpu_cores": min_cpu_cores,
            "min_memory_bytes": min_memory_bytes,
            "owner_id": owner_id,
        }
        query: dict[str, str | int | list[str]] = {k: v for k, v in filters.items() if v is not None}
        if labels:
            query["label"] = [f"{key}={value}" for key, value in labels.items()]
        return _parse(Items[Node], await self._call("GET", "/v1/nodes", params=query)).items

    async def get_node(self, node_id: str) -> Node:
        return _parse(Node, await self._call("GET", f"/v1/nodes/{_segment(node_id)}"))

    async def drain_node(self, node_id: str) -> Node:
        """Stop giving the node new work; what it runs may finish."""
        return _parse(Node, await self._call("POST", f"/v1/nodes/{_segment(node_id)}/drain"))

    async def deregister_node(self, node_id: str) -> None:
        """Remove the node; its credential stops working."""
        await self._call("DELETE", f"/v1/nodes/{_segment(node_id)}")

    async def issue_node_credential(self, node_id: str) -> NodeCredential:
        return _parse(NodeCredential, await self._call("POST", f"/v1/nodes/{_segment(node_id)}/credential"))

    async def revoke_node_credential(self, node_id: str) -> None:
        await self._call("DELETE", f"/v1/nodes/{_segment(node_id)}/credential")

    async def jwks(self) -> dict[str, Any]:
        """The public signing keys (``{"keys": [...]}``), for verifying access tokens locally."""
        document: dict[str, Any] = (await self._call("GET", "/.well-known/jwks.json", auth=False)).json()
        return document

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, params: Query | None = None
    ) -> httpx.Response:
        sent = self.access_token
        response = await self._send(method, path, body, auth=auth, params=params)
        if response.status_code == 401 and auth and self.api_key is None and self.refresh_token is not None:
            async with self._refreshing:
                if self.access_token == sent and self.refresh_token is not None:  # nobody refreshed meanwhile
                    await self.refresh()
            if self.access_token != sent:  # once only: a second 401 is the answer
                response = await self._send(method, path, body, auth=auth, params=params)
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    async def _send(self, method: str, path: str, body: Any, *, auth: bool, params: Query | None) -> httpx.Response:
        credential = (self.api_key or self.access_token) if auth else None
        headers = {"Authorization": f"Bearer {credential}"} if credential else None
        return await self._http.request(method, path, json=body, headers=headers, params=params)

    def _keep(self, tokens: Tokens) -> None:
        self.access_token, self.refresh_token = tokens.access_token, tokens.refresh_token
        if self.on_tokens is not None:
            self.on_tokens(tokens)


def _parse(model: type[M], response: httpx.Response) -> M:
    return model.model_validate_json(response.content)


def _segment(value: str) -> str:
    """An id as one path segment: a ``/`` or ``..`` in it must not reach another route."""
    if value in ("", ".", ".."):  # URL normalisation would drop or climb these
        raise ValueError(f"not an id: {value!r}")
    return quote(value, safe="")
