"""A job's files: given to it in its directory before it starts, and read back once it ended, without following
what the job could plant there (links, FIFOs, another user's file)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from fog_agent.job_messages import MIB, Assignment, BadMessage, OutputFile, Result, finished, parse_assignment
from fog_agent.sandbox import JobUser, Sandbox
from fog_agent.sandbox.files import read_outputs
from fog_agent.sandbox.workdirs import Workdir

AS_ROOT = os.geteuid() == 0
NOBODY = JobUser("nobody", 65534, 65534)


def job(script: str, files: dict[str, bytes] | None = None, outputs: tuple[str, ...] = ()) -> Assignment:
    return Assignment("j-1", 1, ("sh", "-c", script), timeout_s=10, files=files or {}, outputs=outputs)


async def test_a_job_reads_its_files_and_its_outputs_come_back_with_its_end(sandbox: Sandbox) -> None:
    given = {"in/data.txt": b"abc\n", "blob.bin": bytes(range(256))}
    script = "cat in/data.txt && wc -c < blob.bin && echo done > result.txt && mkdir -p d && printf 42 > d/n && id -u"
    sandboxed = sandbox.job(job(script, given, outputs=("result.txt", "d/n", "never-made.txt")))
    result = await sandboxed.run()
    lines = result.output.split()
    assert (result.outcome, lines[:2]) == ("succeeded", ["abc", "256"]), result.error
    assert result.files == (OutputFile("result.txt", b"done\n", 5), OutputFile("d/n", b"42", 2))
    if AS_ROOT:
        assert lines[2] != "0"  # it ran as a user of its own, and could read (and write) what it was given


async def test_a_failed_jobs_outputs_come_back_too(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("echo partial > log.txt; exit 3", outputs=("log.txt",))).run()
    assert (result.outcome, result.exit_code, result.files) == ("failed", 3, (OutputFile("log.txt", b"partial\n", 8),))


async def test_links_fifos_and_directories_are_not_read_back(sandbox: Sandbox) -> None:
    script = "ln -s /etc/passwd leak && ln -s /etc etc && mkfifo pipe && mkdir dir && ln -s dir/../../x up"
    outputs = ("leak", "etc/passwd", "pipe", "dir", "up")
    result = await sandbox.job(job(script, outputs=outputs)).run()
    assert (result.outcome, result.files) == ("succeeded", ())  # and the FIFO did not hold the agent up


async def test_two_files_at_one_path_fail_the_attempt_before_it_runs(sandbox: Sandbox) -> None:
    result = await sandbox.job(job("echo ran", {"a": b"1", "a/b": b"2"})).run()
    assert (result.outcome, result.output) == ("failed", "")
    assert result.error is not None
    assert result.error.startswith("cannot write its files: ")


async def test_a_prepared_job_gets_its_files_too(sandbox: Sandbox) -> None:
    assignment = job("cat given", {"given": b"from the spec\n"})
    sandbox.prepare_job(assignment)  # a lone job is prepared while its placement commits
    result = await sandbox.job(assignment).run()
    assert (result.outcome, result.output) == ("succeeded", "from the spec\n")


def test_outputs_past_the_budget_are_cut_and_say_so(tmp_path: Path) -> None:
    (tmp_path / "first").write_bytes(b"a" * 700)
    (tmp_path / "second").write_bytes(b"b" * 700)
    (tmp_path / "third").write_bytes(b"c")
    found = read_outputs(Workdir(tmp_path), ["first", "second", "third"], budget=1000)
    assert [(f.path, len(f.data), f.size, f.truncated) for f in found] == [
        ("first", 700, 700, False), ("second", 300, 700, True), ("third", 0, 1, True),
    ]  # fmt: skip


@pytest.mark.skipif(not AS_ROOT, reason="files of two users: root makes them")
def test_a_file_the_jobs_user_does_not_own_is_not_its_output(tmp_path: Path) -> None:
    # A hard link to a file the job could not read would otherwise be read by a root agent and sent to its owner.
    (tmp_path / "theirs").write_bytes(b"secret")
    (tmp_path / "mine").write_bytes(b"result")
    os.chown(tmp_path / "mine", NOBODY.uid, NOBODY.gid)
    found = read_outputs(Workdir(tmp_path, NOBODY), ["theirs", "mine"])
    assert found == (OutputFile("mine", b"result", 6),)


def test_an_assignments_files_and_outputs_are_read_and_checked() -> None:
    body = {"job_id": "j", "attempt": 1, "command": ["true"], "files": {"a/b.txt": base64.b64encode(b"x").decode()},
            "outputs": ["out.txt", "out.txt", "d/e"]}  # fmt: skip
    parsed = parse_assignment(body)
    assert (parsed.files, parsed.outputs) == ({"a/b.txt": b"x"}, ("out.txt", "d/e"))
    for bad in ("/etc/passwd", "../x", "a/../b", "a//b", "./a", "", "a\x00b", "x" * 256):
        with pytest.raises(BadMessage):
            parse_assignment({**body, "outputs": [bad]})
        with pytest.raises(BadMessage):
            parse_assignment({**body, "files": {bad: ""}})
    with pytest.raises(BadMessage, match="not base64"):
        parse_assignment({**body, "files": {"a": "not base64!"}})
    with pytest.raises(BadMessage, match="more than"):
        parse_assignment({**body, "files": {"a": base64.b64encode(b"x" * (MIB + 1)).decode()}})
    assert parse_assignment({"job_id": "j", "attempt": 1, "command": ["true"]}).files == {}  # from an older gateway


def test_a_finished_report_carries_the_outputs_in_base64() -> None:
    result = Result("succeeded", 0, 0.1, files=(OutputFile("out.bin", b"\x00\xff", 2),))
    report = finished(("j", 1), result)
    assert report["files"] == [{"path": "out.bin", "data": "AP8=", "size": 2, "truncated": False}]
    assert "files" not in finished(("j", 1), Result("succeeded", 0, 0.1))
