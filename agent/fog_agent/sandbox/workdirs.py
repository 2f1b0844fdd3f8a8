"""Removing ended attempts' working directories (and cgroups), off the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from fog_agent import cgroups

log = logging.getLogger(__name__)


class WorkdirRemover:
    """Removes ended attempts' working directories (and cgroups) in a worker thread, those that wait in one go.

    ``remove`` never blocks: the directory is gone a moment later, or, if the agent stops first, once
    ``finished()`` has been awaited (the agent does, and leaves none behind).
    """

    def __init__(self) -> None:
        self._waiting: list[Path] = []
        self._cgroups: list[Path] = []
        self._removing: asyncio.Task[None] | None = None

    def remove(self, workdir: Path | None, cgroup: Path | None = None) -> None:
        if workdir is not None:
            self._waiting.append(workdir)
        if cgroup is not None:
            self._cgroups.append(cgroup)
        if self._removing is None or self._removing.done():
            self._removing = asyncio.get_running_loop().create_task(self._remove_waiting(), name="workdir removal")

    async def finished(self) -> None:
        """Until every directory handed to ``remove`` is gone (or could not be removed, and was logged)."""
        while self._removing is not None and not self._removing.done():
            await asyncio.shield(self._removing)  # the agent's own cancellation must not stop a removal half way

    async def _remove_waiting(self) -> None:
        while self._waiting or self._cgroups:
            (batch, self._waiting), (emptied, self._cgroups) = (self._waiting, []), (self._cgroups, [])
            await asyncio.to_thread(_remove_all, batch, emptied)


def _remove_all(workdirs: list[Path], cgroup_dirs: Sequence[Path] = ()) -> None:
    for cgroup in cgroup_dirs:
        cgroups.remove(cgroup)
    for workdir in workdirs:
        try:
            os.rmdir(workdir)  # most jobs leave nothing behind
        except OSError:
            _remove_tree(workdir)


def _remove_tree(path: Path) -> None:
    def report(function: object, failed: str, exc_info: object) -> None:
        # e.g. a directory the job made read-only, when the agent is not root: leave it, say so
        log.warning("cannot remove %s from a job's working directory", failed)

    shutil.rmtree(path, onerror=report)
