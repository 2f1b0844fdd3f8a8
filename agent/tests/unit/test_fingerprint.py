"""The machine's fingerprint: nvidia-smi output as it comes, and values cut to what the gateway accepts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fog_agent.fingerprint import (
    NVIDIA_SMI_QUERY,
    arch_name,
    detect_gpus,
    disk_for_jobs,
    existing_ancestor,
    fingerprint,
    os_name,
    parse_nvidia_smi,
)
from fog_agent.sandbox.disk import free_bytes
from fog_client import Gpu

MIB = 1024 * 1024


def gpus(*pairs: tuple[str, int | None]) -> list[Gpu]:
    return [Gpu(model=model, memory_bytes=memory) for model, memory in pairs]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("NVIDIA A100-SXM4-40GB, 40960\n", gpus(("NVIDIA A100-SXM4-40GB", 40960 * MIB))),
        ("Tesla T4, 15360\nTesla T4, 15360\n", gpus(("Tesla T4", 15360 * MIB), ("Tesla T4", 15360 * MIB))),
        ("NVIDIA GeForce RTX 4090, [N/A]\n", gpus(("NVIDIA GeForce RTX 4090", None))),  # e.g. unified memory
        ("Jetson, N/A\r\n\r\n  \n", gpus(("Jetson", None))),  # CRLF, blank lines
        ("  Quadro P400 ,  2000  \n", gpus(("Quadro P400", 2000 * MIB))),
        ("Odd, Name, 1024\n", gpus(("Odd, Name", 1024 * MIB))),  # a comma in the name
        ("Lonely GPU\n", gpus(("Lonely GPU", None))),
        ("Broken, 0\nNegative, -5\nNaN, nan\n", gpus(("Broken", None), ("Negative", None), ("NaN", None))),
        (", 1024\n", []),  # no name: nothing to offer
        ("", []),
    ],
)
def test_nvidia_smi_output_is_parsed_tolerantly(output: str, expected: list[Gpu]) -> None:
    assert parse_nvidia_smi(output) == expected


def test_too_many_or_too_long_gpus_are_cut_to_the_contract() -> None:
    parsed = parse_nvidia_smi("".join(f"GPU {i}, 1024\n" for i in range(20)))
    assert [gpu.model for gpu in parsed] == [f"GPU {i}" for i in range(16)]
    [long] = parse_nvidia_smi("X" * 300 + ", 1\n")
    assert long.model == "X" * 128


def test_no_nvidia_smi_means_no_gpus_and_no_command() -> None:
    def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError("nothing to run")

    assert detect_gpus(which=lambda name: None, run=run) == []


def test_nvidia_smi_is_asked_for_csv_with_a_timeout() -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0, stdout="Tesla T4, 15360\n", stderr="")

    found = detect_gpus(which=lambda name: f"/usr/bin/{name}", run=run)
    assert found == gpus(("Tesla T4", 15360 * MIB))
    [(command, kwargs)] = calls
    assert command == ["/usr/bin/nvidia-smi", *NVIDIA_SMI_QUERY]
    assert NVIDIA_SMI_QUERY == ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    assert kwargs["timeout"] > 0
    assert kwargs["text"] is True


@pytest.mark.parametrize(
    "failure",
    [
        subprocess.TimeoutExpired(["nvidia-smi"], 5),
        FileNotFoundError(2, "No such file or directory"),
        PermissionError(13, "Permission denied"),
    ],
)
def test_a_failing_nvidia_smi_means_no_gpus(failure: Exception) -> None:
    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise failure

    assert detect_gpus(which=lambda name: "/usr/bin/nvidia-smi", run=run) == []


def test_nvidia_smi_exiting_non_zero_means_no_gpus() -> None:
    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        # what it says with the driver unloaded; stdout is not GPU lines
        failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
        return subprocess.CompletedProcess(command, 9, stdout=failed, stderr="")

    assert detect_gpus(which=lambda name: "/usr/bin/nvidia-smi", run=run) == []


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("x86_64", "x86_64"), ("aarch64", "aarch64"), ("", "unknown"), (" ARM v7 ", "ARM_v7"), ("a" * 40, "a" * 32)],
)
def test_arch_fits_the_contract(machine: str, expected: str) -> None:
    assert arch_name(machine) == expected


@pytest.mark.parametrize(
    ("system", "release", "expected"),
    [
        ("Linux", "6.8.0-45-generic", "Linux 6.8.0-45-generic"),
        ("Darwin", "", "Darwin"),
        ("", "", "unknown"),
        ("Linux", "9" * 100, ("Linux " + "9" * 100)[:64]),
    ],
)
def test_os_is_name_and_release(system: str, release: str, expected: str) -> None:
    assert os_name(system, release) == expected


def test_the_fingerprint_of_this_machine_is_acceptable(tmp_path: Path) -> None:
    state_dir = tmp_path / "not" / "created" / "yet"
    assert existing_ancestor(state_dir) == tmp_path
    capabilities = fingerprint(state_dir)
    assert capabilities.cpu_cores >= 1
    assert capabilities.memory_bytes >= 1
    assert capabilities.disk_bytes >= 0  # what is free there, less the reserve: none on a nearly full disk
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", capabilities.arch)
    assert 1 <= len(capabilities.os) <= 64
    assert not state_dir.exists()  # measuring creates nothing


def test_the_disk_for_jobs_is_what_is_free_where_they_write_less_the_reserve(tmp_path: Path) -> None:
    # Other processes write meanwhile: the free space is compared within a margin.
    margin = 256 * 2**20
    free = free_bytes(tmp_path)
    assert abs(disk_for_jobs(tmp_path, {"FOG_AGENT_DISK_RESERVE": "off"}) - free) < margin
    if free > 2 * margin:
        assert abs(disk_for_jobs(tmp_path, {"FOG_AGENT_DISK_RESERVE": f"{margin}b"}) - (free - margin)) < margin
    assert disk_for_jobs(tmp_path, {"FOG_AGENT_DISK_RESERVE": "1000000T"}) == 0  # a reserve past the free: none
    # a reserve the agent would refuse at start is not a join's business: none is kept back
    assert abs(disk_for_jobs(tmp_path, {"FOG_AGENT_DISK_RESERVE": "lots"}) - free) < margin
