"""What the machine is using now, sent with every heartbeat.

Called on the event loop between heartbeats, so every probe here is cheap and never blocks:
``cpu_percent(interval=None)`` compares with the previous call instead of sampling for a while.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil

from fog_client import NodeUsage

UsageSource = Callable[[], NodeUsage]


def usage_of(work_dir: Path) -> UsageSource:
    """A probe of CPU, memory and the disk holding ``work_dir`` (the one the node's jobs will fill)."""
    psutil.cpu_percent(interval=None)  # the first call has nothing to compare with and says 0.0: spend it here

    def probe() -> NodeUsage:
        memory = psutil.virtual_memory()
        return NodeUsage(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            # total - available, not ``used``: what ``used`` counts differs between platforms, and page cache the
            # kernel would give back on demand is not memory the node lacks
            memory_used_bytes=int(memory.total - memory.available),
            disk_used_bytes=int(psutil.disk_usage(str(work_dir)).used),
        )

    return probe
