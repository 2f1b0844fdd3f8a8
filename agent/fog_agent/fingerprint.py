"""What this machine offers, measured once when it joins.

Reading the machine is kept apart from making sense of what was read: the parsing and clean-up
are small pure functions, so tests feed them whatever ``nvidia-smi`` or ``platform`` might say.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from fog_agent.sandbox.disk import free_bytes, reserve_from_env
from fog_client import Capabilities, Gpu

log = logging.getLogger(__name__)

#: limits of the registration contract: longer values are cut, not refused
MAX_GPUS, MAX_GPU_MODEL, MAX_ARCH, MAX_OS = 16, 128, 32, 64
NVIDIA_SMI_QUERY = ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
#: a wedged driver can hang nvidia-smi; joining must not hang with it
NVIDIA_SMI_TIMEOUT_S = 5.0
_MIB = 1024 * 1024
_NOT_ARCH = re.compile(r"[^A-Za-z0-9_.-]")

Run = Callable[..., subprocess.CompletedProcess[str]]


def fingerprint(where: Path, networks: Sequence[str] = ("host",)) -> Capabilities:
    """What the machine offers; its disk for jobs is measured at ``where`` (or the nearest directory above it that
    exists), and ``networks`` are those its jobs may have (``sandbox.job_networks_from_env``)."""
    return Capabilities(
        cpu_cores=cpu_cores(),
        memory_bytes=psutil.virtual_memory().total,
        disk_bytes=disk_for_jobs(existing_ancestor(where)),
        arch=arch_name(platform.machine()),
        os=os_name(platform.system(), platform.release()),
        gpus=detect_gpus(),
        networks=list(networks),
    )


def disk_for_jobs(where: Path, environ: Mapping[str, str] = os.environ) -> int:
    """What jobs that state their disk may fill together: what is free where they write (the agent's directory, by
    default), less the reserve the agent keeps (``FOG_AGENT_DISK_RESERVE``). Measured at join and again at each start
    of the agent (``fog_agent.declaration``), as Nomad fingerprints it: the scheduler places by it, and the agent's
    reserve guards against what changes in between."""
    try:
        reserve = reserve_from_env(where, environ) or 0
    except ValueError:
        reserve = 0  # the agent refuses to run with it; joining is not the place to say so
    return max(0, free_bytes(where) - reserve)


def cpu_cores() -> int:
    # The CPUs this process may run on: a container's cpuset or a taskset narrows them below the machine's.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def arch_name(machine: str) -> str:
    """``platform.machine()`` within the contract's ``[A-Za-z0-9_.-]{1,32}``; it may be empty."""
    return _NOT_ARCH.sub("_", machine.strip())[:MAX_ARCH] or "unknown"


def os_name(system: str, release: str) -> str:
    return " ".join(part.strip() for part in (system, release) if part.strip())[:MAX_OS] or "unknown"


def detect_gpus(*, which: Callable[[str], str | None] = shutil.which, run: Run = subprocess.run) -> list[Gpu]:
    """NVIDIA GPUs from ``nvidia-smi``; none when it is missing or fails (a GPU is never worth failing a join)."""
    executable = which("nvidia-smi")
    if executable is None:
        return []
    try:
        done = run(
            [executable, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:  # TimeoutExpired is a SubprocessError
        log.warning("nvidia-smi failed (%s); offering no GPUs", exc.__class__.__name__)
        return []
    if done.returncode != 0:
        log.warning("nvidia-smi exited with %d; offering no GPUs", done.returncode)
        return []
    return parse_nvidia_smi(done.stdout)


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """Lines of ``name, memory.total`` (MiB, no units). A memory that is not a number (``[N/A]``) is unknown."""
    gpus = []
    for line in output.splitlines():
        name, comma, memory = line.rpartition(",")  # from the right: the name is the field that might hold a comma
        if not comma:  # a name alone
            name, memory = line, ""
        name = name.strip()[:MAX_GPU_MODEL]
        if name:
            gpus.append(Gpu(model=name, memory_bytes=_mib_to_bytes(memory)))
    return gpus[:MAX_GPUS]


def _mib_to_bytes(text: str) -> int | None:
    try:
        mib = float(text.strip())
    except ValueError:
        return None
    return int(mib * _MIB) if mib > 0 and mib != float("inf") else None
