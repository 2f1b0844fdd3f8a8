"""The job runner with real sandboxed jobs: capacity and queue, duplicates, cancel, reports kept until acked, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fog_agent.jobs import MAX_PREPARED, Capacity, JobRunner
from fog_agent.sandbox import Sandbox, job_users_from_env
from fog_shared.testing.waiting import wait_until

SLEEP = ("sleep", "100")


class Sent:
    """The gateway's side of one connection: what the runner sent on it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def ids(self, kind: str) -> list[str]:
        return [m["job_id"] for m in self.messages if m["type"] == kind]

    def finished(self, job_id: str) -> dict[str, Any]:
        [report] = [m for m in self.messages if m["type"] == "finished" and m["job_id"] == job_id]
        return report

    def sequence(self) -> list[tuple[str, str]]:
        return [(m["type"], m["job_id"]) for m in self.messages]


def assignment(
    job_id: str, *command: str, attempt: int = 1, cores: float = 1, gpus: int = 0, timeout_s: float = 30
) -> dict[str, Any]:
    return {
        "type": "assignment",
        "job_id": job_id,
        "attempt": attempt,
        "command": list(command),
        "env": {},
        "timeout_s": timeout_s,
        "resources": {"cpu_cores": cores, "memory_bytes": 256 * 2**20, "gpus": gpus},
        "output_limit_bytes": 2**20,
    }


def cancel(job_id: str, attempt: int = 1) -> dict[str, Any]:
    return {"type": "cancel", "job_id": job_id, "attempt": attempt}


def ack(job_id: str, report: str, attempt: int = 1) -> dict[str, Any]:
    return {"type": "ack", "job_id": job_id, "attempt": attempt, "report": report}


async def until(condition: Callable[[], object], what: str) -> None:
    async def probe() -> bool:
        return bool(condition())

    await wait_until(probe, timeout=10, what=what)


NewRunner = Callable[[Capacity], JobRunner]


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    sandbox = Sandbox(tmp_path / "work", users=job_users_from_env(), kill_grace_s=0.5)
    sandbox.prepare()
    return sandbox


@pytest.fixture
async def new_runner(sandbox: Sandbox) -> AsyncIterator[NewRunner]:
    made: list[JobRunner] = []

    def make(capacity: Capacity) -> JobRunner:
        made.append(JobRunner(sandbox, capacity))
        return made[-1]

    yield make
    for runner in made:
        await runner.close()


async def test_no_more_cores_are_taken_than_the_node_has_and_the_next_job_starts_when_one_ends(
    new_runner: NewRunner,
) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=2)), Sent()
    jobs.attach(sent)
    for job_id in ("a", "b", "c"):
        jobs.assign(assignment(job_id, *SLEEP, cores=1))
    await until(lambda: sent.ids("started") == ["a", "b"], "two jobs started")
    assert jobs.running_jobs == 2
    jobs.cancel(cancel("a"))
    await until(lambda: sent.ids("started") == ["a", "b", "c"], "the third job started")
    assert sent.sequence() == [("started", "a"), ("started", "b"), ("finished", "a"), ("started", "c")]
    assert sent.finished("a")["outcome"] == "cancelled"
    assert jobs.running_jobs == 2


async def test_fractions_of_cores_add_up_exactly(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=0.3)), Sent()
    jobs.attach(sent)
    for job_id in ("a", "b", "c"):
        jobs.assign(assignment(job_id, *SLEEP, cores=0.1))  # 0.1 + 0.1 + 0.1 > 0.3 in floating point
    await until(lambda: len(sent.ids("started")) == 3, "three jobs started")
    assert jobs.running_jobs == 3


async def test_the_queue_is_first_come_first_served_and_a_job_bigger_than_the_node_runs_alone(
    new_runner: NewRunner,
) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=2)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("small", *SLEEP, cores=1))
    jobs.assign(assignment("huge", *SLEEP, cores=8))  # waits for the whole node
    jobs.assign(assignment("behind", *SLEEP, cores=1))  # would fit, but does not overtake
    assert jobs.running_jobs == 1
    await until(lambda: sent.ids("started") == ["small"], "the small job started")
    jobs.cancel(cancel("small"))
    await until(lambda: sent.ids("started") == ["small", "huge"], "the huge job started")
    assert jobs.running_jobs == 1
    jobs.cancel(cancel("huge"))
    await until(lambda: sent.ids("started") == ["small", "huge", "behind"], "the job behind it started")


async def test_each_job_sees_only_the_gpus_it_was_given(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=4, gpus=2)), Sent()
    jobs.attach(sent)
    show = ("sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"; sleep 0.3')
    for job_id in ("a", "b", "c"):
        jobs.assign(assignment(job_id, *show, gpus=1))
    jobs.assign(assignment("none", *show, gpus=0))
    await until(lambda: len(sent.ids("finished")) == 4, "all jobs finished")
    first_two = {sent.finished("a")["output"], sent.finished("b")["output"]}
    assert first_two == {"0\n", "1\n"}
    assert sent.finished("c")["output"] in first_two  # a GPU freed by a or b
    order = sent.sequence()
    assert order.index(("started", "c")) > min(order.index(("finished", "a")), order.index(("finished", "b")))
    assert sent.finished("none")["output"] == "\n"


async def test_a_repeated_assignment_runs_once(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    echo = assignment("a", "sh", "-c", "sleep 0.2; echo once")
    jobs.assign(echo)
    jobs.assign(echo)  # while it runs
    await until(lambda: sent.ids("finished"), "the job finished")
    jobs.assign(echo)  # finished, not acked
    jobs.ack(ack("a", "finished"))
    jobs.assign(echo)  # acked: remembered all the same
    assert jobs.running_jobs == 0
    assert sent.sequence() == [("started", "a"), ("finished", "a")]
    assert sent.finished("a")["output"] == "once\n"

    jobs.assign(assignment("b", *SLEEP))
    jobs.assign(assignment("c", *SLEEP))
    jobs.assign(assignment("c", *SLEEP))  # while queued
    jobs.cancel(cancel("c"))
    jobs.assign(assignment("a", "true", attempt=2))  # another attempt is another job: it queues
    await until(lambda: sent.ids("started") == ["a", "b"], "b started")
    jobs.cancel(cancel("b"))
    await until(lambda: sent.ids("finished") == ["a", "c", "b", "a"], "the others finished")
    assert sent.ids("started") == ["a", "b", "a"]


async def test_cancelling_a_queued_job_reports_it_cancelled_without_starting_it(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("running", *SLEEP))
    jobs.assign(assignment("queued", "sh", "-c", "echo never"))
    jobs.cancel(cancel("queued"))
    jobs.cancel(cancel("unknown"))  # nothing to do
    await until(lambda: sent.ids("finished") == ["queued"], "the cancel reported")
    assert sent.finished("queued") == {
        "type": "finished",
        "job_id": "queued",
        "attempt": 1,
        "outcome": "cancelled",
        "exit_code": None,
        "duration_s": 0.0,
        "output": "",
        "output_truncated": False,
        "error": None,
    }
    await until(lambda: sent.ids("started") == ["running"], "the other job started")
    assert jobs.running_jobs == 1


async def test_started_is_reported_once_the_process_runs_and_never_for_a_job_that_cannot_start(
    new_runner: NewRunner,
) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=3)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("missing", "no-such-program-anywhere"))
    jobs.assign(assignment("taken", *SLEEP))
    jobs.cancel(cancel("taken"))  # running already, but killed before its process could be started
    jobs.assign(assignment("runs", "true"))
    await until(lambda: len(sent.ids("finished")) == 3, "all three ended")
    assert sent.ids("started") == ["runs"]
    assert sent.sequence().index(("started", "runs")) < sent.sequence().index(("finished", "runs"))
    assert [sent.finished(job)["outcome"] for job in ("missing", "taken", "runs")] == [
        "failed",
        "cancelled",
        "succeeded",
    ]


async def test_an_assignment_that_comes_after_its_cancel_never_runs(new_runner: NewRunner) -> None:
    """Assignments may come by a faster path than cancels: a cancelled attempt arriving late stays
    cancelled (the scheduler ended it already, so there is nothing to report), another attempt runs."""
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.cancel(cancel("late"))
    jobs.assign(assignment("late", "sh", "-c", "echo never"))
    jobs.assign(assignment("late", "true", attempt=2))
    await until(lambda: sent.ids("finished") == ["late"], "the other attempt finished")
    assert [(r["job_id"], r["attempt"]) for r in sent.messages if r["type"] == "started"] == [("late", 2)]
    assert jobs.running_jobs == 0


async def test_reports_are_sent_again_on_each_connection_until_acked(new_runner: NewRunner) -> None:
    jobs = new_runner(Capacity(cpu_cores=1))
    jobs.assign(assignment("a", "echo", "hello"))  # while no connection is up
    await until(lambda: len(jobs.unacked_reports) == 2, "both reports")
    first = Sent()
    jobs.attach(first)
    await until(lambda: first.sequence() == [("started", "a"), ("finished", "a")], "the reports sent")
    assert first.finished("a")["output"] == "hello\n"
    jobs.detach()  # the connection dropped before the acks

    second = Sent()
    jobs.attach(second)
    await until(lambda: second.messages == first.messages, "the same reports sent again")
    jobs.ack(ack("a", "started"))
    jobs.detach()

    third = Sent()
    jobs.attach(third)
    await until(lambda: third.sequence() == [("finished", "a")], "only the unacked report sent again")
    jobs.ack(ack("a", "finished"))
    assert jobs.unacked_reports == []
    assert await jobs.reports_acked(0, asyncio.Event())


async def test_an_ack_of_finished_settles_started_too(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("a", "true"))
    await until(lambda: sent.ids("finished"), "the job finished")
    for bad in ({"type": "ack", "job_id": "a", "attempt": 1, "report": "lunch"}, {"type": "ack"}):
        jobs.ack(bad)  # logged and ignored
    jobs.ack(ack("a", "finished"))
    assert jobs.unacked_reports == []


async def test_what_a_running_job_printed_is_reported_from_the_first_character_not_acked(
    new_runner: NewRunner, reachable_dir: Path
) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    go = reachable_dir / "go"  # the job prints "two" once the test says so
    script = f"echo one; while [ ! -e {go} ]; do sleep 0.05; done; echo two; sleep 100"
    jobs.assign(assignment("a", "sh", "-c", script))

    def outputs() -> list[tuple[int, str]]:
        jobs.send_output_so_far()  # as the runner does every OUTPUT_EVERY_S while connected
        return [(m["offset"], m["data"]) for m in sent.messages if m["type"] == "output"]

    await until(lambda: outputs() == [(0, "one\n")], "what it printed first reported")
    assert outputs() == [(0, "one\n")], "nothing new printed: nothing reported"
    go.touch()
    await until(lambda: outputs() == [(0, "one\n"), (0, "one\ntwo\n")], "not acked: reported again from 0")
    jobs.ack({**ack("a", "output"), "through": 4})
    assert [r["offset"] for r in jobs.unacked_reports if r["type"] == "output"] == [0], "acked only in part"
    jobs.ack({**ack("a", "output"), "through": 8})
    assert [r["type"] for r in jobs.unacked_reports] == ["started"]
    jobs.detach()

    again = Sent()
    jobs.attach(again)
    await until(lambda: again.sequence() == [("started", "a")], "the unacked start sent again")
    jobs.cancel(cancel("a"))
    await until(lambda: again.ids("finished") == ["a"], "the job ended")
    assert again.finished("a")["output"] == "one\ntwo\n"
    assert [r["type"] for r in jobs.unacked_reports] == ["started", "finished"]


async def test_an_unusable_assignment_is_reported_failed_when_it_names_its_job(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    unusable = {**assignment("bad", "true"), "command": []}
    jobs.assign(unusable)
    jobs.assign(unusable)  # reported once
    jobs.assign({"type": "assignment", "command": ["true"]})  # no job to report on
    await until(lambda: sent.ids("finished"), "the report")
    assert sent.sequence() == [("finished", "bad")]
    report = sent.finished("bad")
    assert (report["outcome"], report["exit_code"]) == ("failed", None)
    assert "command" in report["error"]


async def test_draining_lets_running_jobs_finish_and_drops_the_queue(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("running", "sh", "-c", "sleep 0.3; echo done"))
    jobs.assign(assignment("queued", "echo", "never"))
    await jobs.drain(30, asyncio.Event())
    jobs.assign(assignment("late", "echo", "never"))  # not taken any more
    await until(lambda: sent.ids("finished"), "the report")
    assert sent.sequence() == [("started", "running"), ("finished", "running")]
    assert (sent.finished("running")["outcome"], sent.finished("running")["output"]) == ("succeeded", "done\n")
    assert not await jobs.reports_acked(0.01, asyncio.Event())
    jobs.ack(ack("running", "finished"))
    assert await jobs.reports_acked(0.01, asyncio.Event())


async def test_draining_kills_what_outlasts_the_timeout_and_reports_it_failed(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("long", *SLEEP))
    await jobs.drain(0.2, asyncio.Event())
    assert jobs.running_jobs == 0
    await until(lambda: sent.ids("finished"), "the report")
    report = sent.finished("long")
    assert (report["outcome"], report["exit_code"]) == ("failed", -15)  # retried elsewhere, not "cancelled"
    assert "shut down" in report["error"]


async def test_hurrying_a_drain_kills_at_once(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("long", *SLEEP))
    hurry = asyncio.Event()
    draining = asyncio.create_task(jobs.drain(3600, hurry))
    await until(lambda: sent.ids("started"), "the job started")
    hurry.set()
    await asyncio.wait_for(draining, timeout=10)
    await until(lambda: sent.ids("finished"), "the report")
    assert sent.finished("long")["outcome"] == "failed"


async def test_closing_kills_running_jobs_without_reports(new_runner: NewRunner) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("long", *SLEEP))
    await until(lambda: sent.ids("started"), "the job started")
    await asyncio.wait_for(jobs.close(), timeout=10)
    assert jobs.running_jobs == 0
    assert sent.ids("finished") == []


def prepare(job_id: str, *command: str, **kwargs: Any) -> dict[str, Any]:
    return {**assignment(job_id, *command, **kwargs), "type": "prepare"}


async def a_workdir(sandbox: Sandbox) -> Path:
    async def made() -> list[Path]:
        return list(sandbox.work_root.iterdir())

    [workdir] = await wait_until(made, timeout=10, what="a working directory")
    return workdir


async def test_a_prepared_job_runs_once_its_assignment_comes_in_what_was_prepared(
    new_runner: NewRunner, sandbox: Sandbox
) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.prepare(prepare("a", "pwd"))
    prepared = await a_workdir(sandbox)
    assert sent.messages == [], "preparing reports nothing"
    assert jobs.running_jobs == 0, "preparing starts nothing"
    jobs.assign(assignment("a", "pwd"))
    await until(lambda: sent.ids("finished"), "the job finished")
    assert sent.sequence() == [("started", "a"), ("finished", "a")]
    assert Path(sent.finished("a")["output"].strip()) == prepared
    jobs.prepare(prepare("a", "pwd"))  # a late copy of an attempt that ended: nothing to prepare
    assert sandbox.prepared_jobs == 0


async def test_a_withdrawn_or_cancelled_preparation_is_undone_and_reports_nothing(
    new_runner: NewRunner, sandbox: Sandbox
) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    for undo in (jobs.withdraw, jobs.cancel):
        jobs.prepare(prepare("a", "true"))
        await a_workdir(sandbox)
        undo(cancel("a"))
        await until(lambda: sandbox.prepared_jobs == 0 and not list(sandbox.work_root.iterdir()), "undone")
    assert sent.messages == []
    jobs.assign(assignment("a", "true"))  # after its cancel: never runs
    assert jobs.running_jobs == 0
    assert sent.messages == []


async def test_a_job_that_would_not_start_at_once_is_not_prepared(new_runner: NewRunner, sandbox: Sandbox) -> None:
    jobs, sent = new_runner(Capacity(cpu_cores=1, gpus=1)), Sent()
    jobs.attach(sent)
    jobs.prepare(prepare("gpu", "true", gpus=1))  # which GPU it gets is known once it starts
    jobs.assign(assignment("busy", *SLEEP))
    await until(lambda: sent.ids("started") == ["busy"], "the node busy")
    jobs.prepare(prepare("full", "true"))  # it would wait for "busy"
    jobs.prepare({"type": "prepare", "job_id": "bad"})  # unreadable: nothing
    assert sandbox.prepared_jobs == 0


async def test_no_more_than_a_few_jobs_are_held_prepared(new_runner: NewRunner, sandbox: Sandbox) -> None:
    jobs = new_runner(Capacity(cpu_cores=64))
    for n in range(MAX_PREPARED + 3):  # preparations whose assignments never come
        jobs.prepare(prepare(f"j{n}", "true", cores=0.1))
    assert sandbox.prepared_jobs == MAX_PREPARED


async def test_jobs_the_launcher_stopped_for_want_of_word_from_the_agent_fail_with_why_and_the_queue_goes(
    new_runner: NewRunner,
) -> None:
    """The agent's lease on its launcher ran out (the agent did not run: stopped, frozen): the launcher killed
    the running job; it ends ``failed`` saying so, and the queued one is dropped, as the platform runs both
    elsewhere. The connection is told to start anew (``fenced_by_launcher``)."""
    jobs, sent = new_runner(Capacity(cpu_cores=1)), Sent()
    jobs.attach(sent)
    jobs.assign(assignment("running", *SLEEP))
    jobs.assign(assignment("queued", *SLEEP))
    await until(lambda: sent.ids("started") == ["running"], "the first job started")
    jobs.keep_launcher_alive(0.3)  # and never again: to the launcher, the agent is frozen
    await until(lambda: sent.ids("finished") == ["running"], "the job stopped by the launcher")
    report = sent.finished("running")
    assert report["outcome"] == "failed"
    assert "the agent did not run for" in report["error"]
    assert jobs.fenced_by_launcher.is_set()
    assert (jobs.running_jobs, sent.ids("started")) == (0, ["running"]), "the queued job was dropped, not started"
