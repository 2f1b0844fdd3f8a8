"""The job messages: assignments parsed strictly, acks, and a ``finished`` report that always fits in a message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fog_agent.job_messages import (
    MIB,
    Ack,
    Assignment,
    BadMessage,
    Resources,
    Result,
    finished,
    parse_ack,
    parse_assignment,
    started,
)
from fog_agent.protocol import MAX_MESSAGE_BYTES, encode

ASSIGNMENT: dict[str, Any] = {
    "type": "assignment",
    "job_id": "j-1",
    "attempt": 2,
    "command": ["python3", "-c", "print(1)"],
    "env": {"GREETING": "hi"},
    "timeout_s": 30,
    "resources": {"cpu_cores": 0.5, "memory_bytes": 128 * MIB, "gpus": 1},
    "output_limit_bytes": 4096,
}


def test_an_assignment_is_read_whole() -> None:
    assert parse_assignment(ASSIGNMENT) == Assignment(
        "j-1", 2, ("python3", "-c", "print(1)"), {"GREETING": "hi"}, 30.0, Resources(0.5, 128 * MIB, 1), 4096
    )


def test_what_an_assignment_leaves_out_takes_the_jobspec_defaults() -> None:
    assignment = parse_assignment({"type": "assignment", "job_id": "j-1", "attempt": 1, "command": ["true"]})
    assert assignment == Assignment("j-1", 1, ("true",), {}, 3600.0, Resources(1.0, 256 * MIB, 0), MIB)
    assert assignment.network == "host"
    assert parse_assignment({**ASSIGNMENT, "network": "none"}).network == "none"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"command": []}, "command"),
        ({"command": ["", "x"]}, "names no program"),
        ({"command": "echo hi"}, "command"),
        ({"command": ["echo", 1]}, "command"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"OK": 1}}, "env"),
        ({"env": []}, "env"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"resources": {"cpu_cores": -1}}, "cpu_cores"),
        ({"resources": {"memory_bytes": 1.5}}, "memory_bytes"),
        ({"resources": {"gpus": -1}}, "gpus"),
        ({"resources": None}, "resources"),
        ({"output_limit_bytes": -1}, "output_limit_bytes"),
        # a network this agent does not know is refused, never run as the node's own
        ({"network": "bridge"}, "network"),
        ({"network": None}, "network"),
    ],
)
def test_an_unusable_assignment_names_its_job_and_the_problem(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadMessage, match=problem) as raised:
        parse_assignment({**ASSIGNMENT, **change})
    assert raised.value.key == ("j-1", 2)  # so that the agent can report it failed


@pytest.mark.parametrize(
    "change",
    [{"job_id": ""}, {"job_id": 7}, {"job_id": "j" * 257}, {"attempt": 0}, {"attempt": True}, {"attempt": "1"}],
)
def test_an_assignment_without_a_usable_job_attempt_names_none(change: dict[str, Any]) -> None:
    with pytest.raises(BadMessage) as raised:
        parse_assignment({**ASSIGNMENT, **change})
    assert raised.value.key is None


def test_acks_name_a_report() -> None:
    finished = {"type": "ack", "job_id": "j-1", "attempt": 1, "report": "finished"}
    assert parse_ack(finished) == Ack(("j-1", 1), "finished")
    output = {"type": "ack", "job_id": "j-1", "attempt": 1, "report": "output", "through": 12}
    assert parse_ack(output) == Ack(("j-1", 1), "output", 12)
    with pytest.raises(BadMessage, match="through"):
        parse_ack({**output, "through": -1})
    with pytest.raises(BadMessage, match="unknown report"):
        parse_ack({"type": "ack", "job_id": "j-1", "attempt": 1, "report": "assignment"})


def test_reports_follow_the_contract() -> None:
    assert started(("j-1", 3)) == {"type": "started", "job_id": "j-1", "attempt": 3}
    result = Result("failed", 2, 1.23456, "oops\n", False, None)
    assert finished(("j-1", 3), result) == {
        "type": "finished",
        "job_id": "j-1",
        "attempt": 3,
        "outcome": "failed",
        "exit_code": 2,
        "duration_s": 1.235,
        "output": "oops\n",
        "output_truncated": False,
        "error": None,
    }


@pytest.mark.parametrize("character", ["\x00", "\ufffd", "😀", "a"])
def test_a_finished_report_always_fits_in_a_message(character: str) -> None:
    output = character * (4 * MIB + 1)  # as JSON, a control character takes 6 bytes, U+FFFD 3, an emoji 4
    report = finished(("j-1", 1), Result("succeeded", 0, 1.0, output, False, None))
    size = len(encode(report).encode())
    assert size <= MAX_MESSAGE_BYTES
    assert size > MAX_MESSAGE_BYTES * 0.9  # cut to fit, not to nothing
    assert output.startswith(report["output"])
    assert report["output_truncated"]
    assert json.loads(encode(report))["output"] == report["output"]
