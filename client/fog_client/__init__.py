"""fog_client: a small typed async client for Fog's HTTP API (fogctl, the e2e tests, the node agent)."""

from fog_client.client import FogClient
from fog_client.errors import ApiError
from fog_client.models import (
    ApiKey,
    Capabilities,
    CreatedApiKey,
    Gpu,
    Location,
    Me,
    Node,
    NodeCredential,
    NodeUsage,
    RegisteredNode,
    RotatedKey,
    Tokens,
    User,
)

__version__ = "0.1.0"
__all__ = [
    "ApiError",
    "ApiKey",
    "Capabilities",
    "CreatedApiKey",
    "FogClient",
    "Gpu",
    "Location",
    "Me",
    "Node",
    "NodeCredential",
    "NodeUsage",
    "RegisteredNode",
    "RotatedKey",
    "Tokens",
    "User",
]
