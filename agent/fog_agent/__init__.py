"""Fog's node agent. It speaks only HTTP/WebSocket to the gateway, never NATS or Postgres.

``fog-agent join`` measures the machine (``fingerprint``), registers it as a node through
``fog_client`` and keeps the node's credential in a private state file (``state``).
``fog-agent run`` keeps the node connected (``connection``): heartbeats with the machine's usage
(``usage``), reconnection with backoff, and a goodbye on SIGTERM/SIGINT. Job execution arrives
with issue 5.
"""

__version__ = "0.1.0"
