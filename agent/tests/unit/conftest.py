"""The agent's sandbox as its tests use it: as whom jobs run, and what they see, as ``fog-agent run`` would have it
here; and a way to try, as root, what a spare of an agent that is not root does."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import traceback
from collections.abc import AsyncIterator, Callable
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


NOBODY = 65534
_PR_SET_DUMPABLE = 4
#: runs a check as a user that is not root, and gives its exit code
AsNobody = Callable[[Callable[[], int]], int]


def unprivileged_user_namespaces() -> bool:
    """Whether this kernel lets a user who is not root make a user namespace (Debian's and Ubuntu's switches too)."""
    switches = {
        "/proc/sys/user/max_user_namespaces": lambda value: int(value) > 0,
        "/proc/sys/kernel/unprivileged_userns_clone": lambda value: value == "1",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": lambda value: value == "0",
    }
    for path, allows in switches.items():
        with contextlib.suppress(FileNotFoundError):
            if not allows(Path(path).read_text().strip()):
                return False
    return True


@pytest.fixture
def as_nobody() -> AsNobody:
    """Run a check in a child that became ``nobody``, as an agent that is not root runs its launcher (dumpable, as
    a process that never changed its user is); its exit code (1 if it raised)."""
    if os.geteuid() != 0:
        pytest.skip("becoming another user takes root")
    if not unprivileged_user_namespaces():
        pytest.skip("this kernel lets no user but root make namespaces")

    def run(check: Callable[[], int]) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover -- the child
            code = 1
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
                code = check()
            except BaseException:
                traceback.print_exc()  # to the test's captured stderr: why it failed
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    return run


#: skips the test where a probe, run as ``nobody``, finds the machine refuses it what the test needs
NobodyMay = Callable[[Callable[[], int], str], None]


@pytest.fixture
def nobody_may(as_nobody: AsNobody) -> NobodyMay:
    """Skip the test where ``probe``, run as ``nobody``, finds the machine refuses it ``what``: a CI sandbox may, now
    and then, where the kernel's switches say it may not. The agent then gives its jobs less, which other tests show."""

    def check(probe: Callable[[], int], what: str) -> None:
        refused = as_nobody(probe)
        if refused:
            pytest.skip(f"this machine refuses nobody {what}: {errno.errorcode.get(refused, str(refused))}")

    return check
