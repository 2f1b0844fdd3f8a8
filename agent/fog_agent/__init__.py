"""Fog's node agent. It speaks only HTTP/WebSocket to the gateway, never NATS or Postgres.

``fog-agent join`` measures the machine (``fingerprint``), registers it as a node through
``fog_client`` and keeps the node's credential in a private state file (``state``).
``fog-agent run`` keeps the node connected (``connection``): heartbeats with the machine's usage
(``usage``), reconnection with backoff, and a goodbye on SIGTERM/SIGINT once its jobs have drained.
It runs the jobs the gateway assigns (``jobs``: capacity, queue, reports kept until acked), each as a
sandboxed subprocess (``sandbox``); the job messages are in ``job_messages``.
"""

__version__ = "0.1.0"
