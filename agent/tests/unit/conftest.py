"""The agent's sandbox as its tests use it: as whom jobs run, and what they see, as ``fog-agent run`` would have it
here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fog_agent.sandbox import Sandbox, job_users_from_env, private_view_from_env


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """Neither Landlock nor a cgroup; a short grace between SIGTERM and SIGKILL."""
    box = Sandbox(tmp_path / "work", users=job_users_from_env(), private_view=private_view_from_env(), kill_grace_s=0.5)
    box.prepare()
    yield box
    await box.close()
    await box.removals.finished()
