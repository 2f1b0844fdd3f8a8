"""Settings of the gateway service: environment variables prefixed ``FOG_GATEWAY_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from fog_gateway.access_log import AccessLog
from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_GATEWAY_", extra="ignore")

    service: ClassVar[str] = "gateway"
    http_port: int = 8080
    #: the API port is public: ``/metrics`` is served on a port of its own (0: a free one, named in the log);
    #: Kubernetes sets 9090 (deploy/k8s)
    metrics_port: int | None = 0
    token_issuer: str = "fog-auth"  # noqa: S105 - a name, not a secret
    token_audience: str = "fog"  # noqa: S105 - a name, not a secret
    access_token_ttl_s: int = 600
    #: how long an API key's or node credential's introspection is reused; revocation events
    #: evict it sooner
    credential_cache_s: float = 30.0
    #: token buckets per client address (all requests) and per principal (authenticated ones);
    #: a rate of 0 turns a limit off. Limits are per gateway process.
    rate_per_source_per_s: float = 100.0
    burst_per_source: int = 200
    rate_per_principal_per_s: float = 50.0
    burst_per_principal: int = 100
    #: request bodies above this are refused with 413 before they are read
    max_body_bytes: int = 1_048_576
    #: a log line for each request answered with a server error ("errors"), for every request ("all"), or none
    access_log: AccessLog = "errors"
    #: what agents are told to keep to (keep FOG_REGISTRY_HEARTBEAT_INTERVAL_S equal)
    node_heartbeat_interval_s: float = 5.0
    #: heartbeats are forwarded to the registry in one batch per this period
    heartbeat_flush_s: float = 0.25
    #: how often the long-lived heap is moved out of the cyclic GC's way (fog_gateway.heap);
    #: 0 turns that off
    gc_freeze_every_s: float = 10.0
