"""Waiting for processes to be gone (a zombie not yet reaped is gone too: it runs nothing)."""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from fog_shared.testing.waiting import wait_until


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def all_gone(pids: Iterable[int], *, timeout: float = 5.0) -> None:
    """Until none of ``pids`` runs; fails at the deadline."""
    pids = list(pids)

    async def gone() -> bool:
        return not any(alive(pid) for pid in pids)

    await wait_until(gone, timeout=timeout, what=f"processes {pids} to be gone")
