"""Fog's node agent. It speaks only HTTP/WebSocket to the gateway, never NATS or Postgres.

Joining, heartbeats and job execution arrive with the nodes and jobs work (issues 4 and 5).
"""

__version__ = "0.1.0"
