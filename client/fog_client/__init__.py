"""fog_client: a small typed async client for Fog's HTTP API (fogctl, the e2e tests, the node agent)."""

from fog_client.client import FogClient
from fog_client.errors import ApiError
from fog_client.models import ApiKey, CreatedApiKey, Me, NodeCredential, RotatedKey, Tokens, User

__version__ = "0.1.0"
__all__ = ["ApiError", "ApiKey", "CreatedApiKey", "FogClient", "Me", "NodeCredential", "RotatedKey", "Tokens", "User"]
