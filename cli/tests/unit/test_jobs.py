"""``fogctl job ...`` with the saved session, against a scripted gateway (MockTransport)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from scripted_gateway import script_gateway
from typer.testing import CliRunner

from fog_client import Job
from fogctl import arrays, jobs
from fogctl.__main__ import app
from fogctl.jobs import exit_status, parse_size
from fogctl.session import Session

URL = "http://gateway.test"
NOW = "2030-01-02T03:04:05Z"
MIB = 2**20
DEFAULT_SPEC = {
    "command": ["echo", "hi"],
    "env": {},
    "resources": {"cpu_cores": 1.0, "memory_bytes": 256 * MIB, "gpus": 0},
    "constraints": {"labels": {}},
    "affinities": [],
    "priority": 50,
    "timeout_s": 3600.0,
    "max_attempts": 3,
    "retry_backoff_s": 1.0,
}


def job(job_id: str = "j1", **changes: Any) -> dict[str, Any]:
    body = {
        "id": job_id, "owner_id": "u1", "name": None, "array_id": None, "array_index": None, "spec": DEFAULT_SPEC,
        "status": "pending", "attempt": 0, "node_id": None, "not_before": None, "exit_code": None,
        "duration_s": None, "error": None, "submitted_at": NOW, "started_at": None, "finished_at": None,
    }  # fmt: skip
    return {**body, **changes}


def summary(statuses: dict[str, int], count: int = 10) -> dict[str, Any]:
    ended = sum(n for status, n in statuses.items() if status in ("succeeded", "failed", "timed_out", "cancelled"))
    return {"array_id": "a1", "count": count, "submitted_at": NOW, "statuses": statuses, "ended": ended}


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": f"urn:fog:problem:{code}", "title": code.replace("_", " "), "status": status, "code": code}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class Gateway:
    """Job ``j1``, whose reads step through ``states`` (the last one stays), and its output's through
    ``outputs`` (or stay ``output``); pages of ``pages`` by cursor."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = [job()]
        self.output: dict[str, Any] = {"output": "", "truncated": False, "exit_code": None}
        self.outputs: list[dict[str, Any]] = []
        self.explanation: dict[str, Any] = {}
        self.pages: dict[str | None, dict[str, Any]] = {None: {"items": [job()], "next_cursor": None}}
        self.requests: list[httpx.Request] = []
        self.arrays: list[dict[str, Any]] = [summary({"pending": 10})]  # array a1's reads, as ``states``

    def sent(self) -> Any:
        return json.loads(self.requests[0].content)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("Authorization") != "Bearer a1":
            return problem(401, "invalid_token")
        match request.method, request.url.path.split("/")[3:]:
            case "POST", []:
                spec = json.loads(request.content)
                waits = len(spec.get("after", [])) + len(spec.get("after_any", []))  # as if none had ended yet
                return httpx.Response(201, json=job(spec=spec, name=spec.get("name"), waiting_for=waits))
            case "POST", ["array"]:
                count = json.loads(request.content)["count"]
                return httpx.Response(201, json={"array_id": "a1", "count": count, "job_ids": ["j1", "j2", "j3"]})
            case "GET", []:
                return httpx.Response(200, json=self.pages[request.url.params.get("cursor")])
            case "GET", ["j1"]:
                return httpx.Response(200, json=self.states.pop(0) if len(self.states) > 1 else self.states[0])
            case "GET", ["j1", "output"]:
                if self.outputs:
                    return httpx.Response(200, json=self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0])
                return httpx.Response(200, json=self.output)
            case "GET", ["j1", "explain"]:
                return httpx.Response(200, json=self.explanation)
            case "POST", ["j1", "cancel"]:
                return httpx.Response(200, json=self.states[-1])
            case "GET", ["arrays", "a1"]:
                return httpx.Response(200, json=self.arrays.pop(0) if len(self.arrays) > 1 else self.arrays[0])
            case "POST", ["arrays", "a1", "cancel"]:
                return httpx.Response(200, json=self.arrays[-1])
        return problem(404, "not_found")


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    fake = Gateway()
    script_gateway(monkeypatch, fake, URL)
    monkeypatch.setattr(jobs, "POLL_S", 0)  # the scripted job moves on at every read: no need to pause between them
    monkeypatch.setattr(arrays, "POLL_S", 0)
    return fake


@pytest.fixture
def logged_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    monkeypatch.setenv("COLUMNS", "200")  # a table as wide as its rows, whatever the test runner's terminal
    saved = Session(URL, "pat@example.org", "a1", "r1")
    saved.save()
    return saved


runner = CliRunner()


def fogctl(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def cells(out: str, border: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split(border)[1:-1]] for line in out.splitlines() if line.startswith(border)]


# -- submit ------------------------------------------------------------------------------------------


def test_submit_sends_the_defaults_and_prints_the_id(gateway: Gateway, logged_in: Session) -> None:
    code, out, err = fogctl("job", "submit", "--", "echo", "hi")
    assert code == 0, err
    assert out == "j1\n"
    assert (gateway.requests[0].method, gateway.requests[0].url.path) == ("POST", "/v1/jobs")
    assert gateway.sent() == DEFAULT_SPEC


def test_submit_builds_the_spec_from_the_flags(gateway: Gateway, logged_in: Session) -> None:
    code, out, err = fogctl(
        "job", "submit", "--name", "serve", "--cpu", "0.5", "--memory", "512M", "--gpus", "1",
        "--label", "zone=a", "--label", "disk=ssd", "--region", "eu-west", "--arch", "arm64",
        "--affinity", "tier=gold:30", "--affinity", "url=http://x:5", "--network", "none",
        "--env", "MODE=fast", "--env", "QUERY=a=b", "--priority", "80", "--timeout", "60", "--max-attempts", "2",
        "--retry-backoff", "30", "--idempotency-key", "k-1", "--json",
        "--", "python", "-m", "http.server", "--port", "8000", "--", "x",
    )  # fmt: skip
    assert code == 0, err
    assert gateway.sent() == {
        "command": ["python", "-m", "http.server", "--port", "8000", "--", "x"],  # options after `--` are the job's
        "env": {"MODE": "fast", "QUERY": "a=b"},
        "resources": {"cpu_cores": 0.5, "memory_bytes": 512 * MIB, "gpus": 1},
        "constraints": {"labels": {"zone": "a", "disk": "ssd"}, "region": "eu-west", "arch": "arm64"},
        "affinities": [
            {"label": "tier", "value": "gold", "weight": 30},
            {"label": "url", "value": "http://x", "weight": 5},
        ],
        "network": "none",
        "priority": 80,
        "timeout_s": 60,
        "max_attempts": 2,
        "retry_backoff_s": 30,
        "name": "serve",
        "idempotency_key": "k-1",
    }
    shown = json.loads(out)
    assert (shown["id"], shown["name"], shown["spec"]["resources"]["memory_bytes"]) == ("j1", "serve", 512 * MIB)


def test_once_the_command_begins_every_word_is_the_jobs(gateway: Gateway, logged_in: Session) -> None:
    code, _, err = fogctl("job", "submit", "--cpu", "2", "python", "-m", "x", "--cpu", "3")
    assert code == 0, err
    assert gateway.sent()["command"] == ["python", "-m", "x", "--cpu", "3"]
    assert gateway.sent()["resources"]["cpu_cores"] == 2


@pytest.mark.parametrize("argv", [[], ["--"], ["--name", "x", "--"], ["--", ""]])
def test_an_empty_command_is_refused(gateway: Gateway, logged_in: Session, argv: list[str]) -> None:
    code, _, err = fogctl("job", "submit", *argv)
    assert code == 2
    assert "no command" in err
    assert gateway.requests == []


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--label", "zone", "not key=value"),
        ("--env", "=x", "not key=value"),
        ("--affinity", "zone=a", "not key=value:weight"),
        ("--affinity", "zone=a:heavy", "not key=value:weight"),
        ("--affinity", "zone:5", "not key=value:weight"),
        ("--memory", "lots", "not a size"),
    ],
)
def test_a_malformed_flag_is_refused(gateway: Gateway, logged_in: Session, flag: str, value: str, says: str) -> None:
    code, _, err = fogctl("job", "submit", flag, value, "--", "echo")
    assert code == 2
    assert says in err
    assert gateway.requests == []


def test_a_refused_spec_says_which_field_and_why(logged_in: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    errors = [
        {"loc": ["body", "resources", "cpu_cores"], "msg": "Input should be greater than 0", "type": "greater_than"},
        {"loc": ["body"], "msg": "Value error, too many variables", "type": "value_error"},
    ]
    body = {"type": "urn:fog:problem:invalid", "title": "Invalid request", "status": 422, "code": "invalid",
            "detail": "the request does not match the schema", "errors": errors}  # fmt: skip
    script_gateway(monkeypatch, lambda _: httpx.Response(422, json=body))
    code, _, err = fogctl("job", "submit", "--cpu", "-1", "--", "true")
    assert code == 1
    said = "422 Invalid request: the request does not match the schema [invalid]"
    assert f"{said}; resources.cpu_cores: Input should be greater than 0; Value error, too many variables" in err


def test_a_failure_on_the_platforms_side_names_the_request_to_trace(
    logged_in: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"type": "urn:fog:problem:service_unavailable", "title": "Service unavailable", "status": 503,
            "code": "service_unavailable", "detail": "the scheduler did not answer in time"}  # fmt: skip
    headers = {"X-Request-ID": "req-42", "Retry-After": "0"}
    script_gateway(monkeypatch, lambda _: httpx.Response(503, json=body, headers=headers))
    code, _, err = fogctl("job", "get", "j1")
    assert code == 1
    assert "503 Service unavailable: the scheduler did not answer in time" in err
    assert "(request req-42: `fogctl events trace req-42`)" in err
    script_gateway(monkeypatch, lambda _: problem(404, "not_found"))
    code, _, err = fogctl("job", "get", "j1")
    assert code == 1
    assert "request" not in err  # the caller's own mistake: nothing for an admin to trace


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1048576", 1048576),
        ("64k", 64 * 1024),
        ("512M", 512 * MIB),
        ("512Mi", 512 * MIB),
        ("2G", 2 * 1024 * MIB),
        ("2 GB", 2 * 1024 * MIB),
        ("1.5GiB", 1536 * MIB),
        ("1t", 2**40),
        ("100b", 100),
    ],
)
def test_memory_sizes_are_binary(text: str, count: int) -> None:
    assert parse_size(text, "--memory") == count


@pytest.mark.parametrize("text", ["", "G", "-1G", "1.2.3M", "2X", "1e9", "5 ib"])
def test_a_size_must_be_a_number_and_a_unit(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_size(text, "--disk")


def test_submit_an_array_prints_its_id(gateway: Gateway, logged_in: Session) -> None:
    code, out, err = fogctl("job", "submit", "--array", "3", "--", "echo", "hi")
    assert code == 0, err
    assert out == "a1\n"
    assert "Submitted 3 jobs as array a1." in err
    assert (gateway.requests[0].url.path, gateway.sent()) == ("/v1/jobs/array", {"spec": DEFAULT_SPEC, "count": 3})

    code, out, err = fogctl("job", "submit", "--array", "3", "--json", "--", "echo", "hi")
    assert code == 0, err
    assert json.loads(out) == {"array_id": "a1", "count": 3, "job_ids": ["j1", "j2", "j3"]}


def test_submit_an_array_and_wait_prints_its_summary_and_exits_0_only_if_all_succeeded(
    gateway: Gateway, logged_in: Session
) -> None:
    gateway.arrays = [summary({"pending": 10}), summary({"succeeded": 9, "failed": 1})]
    code, out, err = fogctl("job", "submit", "--wait", "--array", "10", "--", "echo", "hi")
    assert code == 1, err
    assert "Submitted 10 jobs as array a1; waiting for them to end." in err
    assert out.splitlines()[-2:] == ["succeeded  9", "failed     1"]

    gateway.arrays = [summary({"succeeded": 10})]
    code, out, err = fogctl("job", "submit", "--wait", "--array", "10", "--json", "--", "echo", "hi")
    assert code == 0, err
    assert json.loads(out)["statuses"] == {"succeeded": 10}
    paths = [(r.method, r.url.path) for r in gateway.requests]
    assert paths == [("POST", "/v1/jobs/array"), *[("GET", "/v1/jobs/arrays/a1")] * 2, ("POST", "/v1/jobs/array"),
                     ("GET", "/v1/jobs/arrays/a1")]  # fmt: skip


# -- waiting -----------------------------------------------------------------------------------------


def running_output(text: str, offset: int = 0, attempt: int = 1, ended: bool = False) -> dict[str, Any]:
    """What ``GET /v1/jobs/j1/output?offset=...`` answers: the text from ``offset`` on."""
    return {"output": text, "truncated": False, "exit_code": None, "length": offset + len(text), "ended": ended,
            "attempt": attempt}  # fmt: skip


def test_submit_wait_prints_the_output_raw_as_it_comes_and_exits_with_the_jobs_code(
    gateway: Gateway, logged_in: Session
) -> None:
    raw = "line 1\n\x1b[31mred\x1b[0m ünïcode\r\n"
    gateway.states = [job(status="failed", exit_code=3, error="exited with 3")]
    gateway.outputs = [running_output(raw), running_output("", len(raw)),
                       running_output("no newline at the end", len(raw), ended=True)]  # fmt: skip
    result = runner.invoke(app, ["job", "submit", "--wait", "--", "sh", "-c", "exit 3"])
    assert result.exit_code == 3, result.stderr
    # as captured: colours kept, no newline added, nothing else
    assert result.stdout_bytes == (raw + "no newline at the end").encode()
    assert "Submitted job j1" in result.stderr
    assert "Job j1 failed with exit code 3: exited with 3" in result.stderr
    asked = [(r.url.path, r.url.params.get("offset")) for r in gateway.requests]
    followed = [("/v1/jobs/j1/output", offset) for offset in (None, f"{len(raw)}", f"{len(raw)}")]
    assert asked == [("/v1/jobs", None), *followed, ("/v1/jobs/j1", None)], "from each answer's length; the job once"


def test_wait_prints_each_attempts_output_as_it_comes(gateway: Gateway, logged_in: Session) -> None:
    gateway.states = [job(status="succeeded", exit_code=0, attempt=2)]
    gateway.outputs = [
        running_output("first try\n"),
        running_output("", 10, attempt=2),  # asked from 10: a new attempt, so the follower asks from its start
        running_output("second", attempt=2),
        running_output(" try\n", 6, attempt=2, ended=True),
    ]
    code, out, err = fogctl("job", "wait", "j1")
    assert (code, out) == (0, "first try\nsecond try\n")
    assert "--- attempt 2 ---" in err  # on stderr: stdout is the job's alone


def test_a_succeeded_job_exits_0_quietly(gateway: Gateway, logged_in: Session) -> None:
    gateway.states = [job(status="succeeded", exit_code=0)]
    gateway.output = {"output": "hi\n", "truncated": False, "exit_code": 0}
    code, out, err = fogctl("job", "submit", "--wait", "--", "echo", "hi")
    assert (code, out) == (0, "hi\n")
    assert "Job j1" not in err


@pytest.mark.parametrize("status", ["cancelled", "timed_out"])
def test_a_job_that_ended_without_an_exit_code_exits_1(gateway: Gateway, logged_in: Session, status: str) -> None:
    gateway.states = [job(status=status, error="stopped")]
    gateway.output = running_output("so far\n", ended=True)
    code, out, err = fogctl("job", "wait", "j1")
    assert (code, out) == (1, "so far\n")
    assert f"Job j1 {status}: stopped" in err


def test_wait_as_json_has_the_job_and_its_output(gateway: Gateway, logged_in: Session) -> None:
    gateway.states = [job(status="running"), job(status="failed", exit_code=2)]
    gateway.output = {"output": "oops\n", "truncated": True, "exit_code": 2, "length": 5, "ended": True, "attempt": 1}
    code, out, _ = fogctl("job", "wait", "j1", "--json")
    assert code == 2
    shown = json.loads(out)
    assert (shown["job"]["status"], shown["output"]) == ("failed", gateway.output)


def test_truncated_output_is_said_on_stderr(gateway: Gateway, logged_in: Session) -> None:
    gateway.output = {"output": "start of a long story", "truncated": True, "exit_code": None}
    code, out, err = fogctl("job", "logs", "j1")
    assert (code, out) == (0, "start of a long story")
    assert "truncated" in err


@pytest.mark.parametrize(
    ("status", "exit_code", "expected"),
    [
        ("succeeded", 0, 0),
        ("succeeded", None, 0),
        ("failed", 3, 3),
        ("failed", -9, 137),  # killed by SIGKILL, as a shell reports it
        ("failed", 256, 1),  # would wrap to 0: a failure never reads as a success
        ("failed", None, 1),
        ("timed_out", None, 1),
        ("cancelled", None, 1),
    ],
)
def test_the_exit_status_is_the_jobs(status: str, exit_code: int | None, expected: int) -> None:
    assert exit_status(Job.model_validate(job(status=status, exit_code=exit_code))) == expected


# -- the other commands -------------------------------------------------------------------------------


def test_list_as_json_follows_the_cursors_with_all(gateway: Gateway, logged_in: Session) -> None:
    gateway.pages = {
        None: {"items": [job("j1"), job("j2")], "next_cursor": "c2"},
        "c2": {"items": [job("j3")], "next_cursor": None},
    }
    code, out, err = fogctl("job", "list", "--json", "--status", "pending", "--array", "a1", "--limit", "2")
    assert code == 0, err
    page = json.loads(out)
    assert ([j["id"] for j in page["items"]], page["next_cursor"]) == (["j1", "j2"], "c2")
    params = gateway.requests[0].url.params
    assert (params["status"], params["array_id"], params["limit"]) == ("pending", "a1", "2")
    assert params["order"] == "newest"  # what a person listing their jobs looks for: the last ones

    code, out, err = fogctl("job", "list", "--json", "--all", "--oldest-first", "--name", "nightly")
    assert code == 0, err
    page = json.loads(out)
    assert ([j["id"] for j in page["items"]], page["next_cursor"]) == (["j1", "j2", "j3"], None)
    assert [request.url.params["order"] for request in gateway.requests[1:]] == ["oldest", "oldest"]
    assert [request.url.params["name"] for request in gateway.requests[1:]] == ["nightly", "nightly"]


def test_list_shows_a_table_and_where_the_next_page_is(gateway: Gateway, logged_in: Session) -> None:
    running = job("j2", name="calc", status="running", node_id="n1", attempt=2)
    gateway.pages = {
        None: {"items": [job("j1", status="failed", attempt=1, exit_code=3), running], "next_cursor": "c2"}
    }
    code, out, err = fogctl("job", "list")
    assert code == 0, err
    assert cells(out, "┃") == [["id", "name", "status", "node", "attempt", "exit", "submitted"]]
    assert cells(out, "│") == [
        ["j1", "-", "failed", "-", "1", "3", "2030-01-02 03:04:05 UTC"],
        ["j2", "calc", "running", "n1", "2", "-", "2030-01-02 03:04:05 UTC"],
    ]
    assert "--cursor c2" in err


def test_get_shows_one_job_but_not_its_env_values(gateway: Gateway, logged_in: Session) -> None:
    spec = {**DEFAULT_SPEC, "command": ["sh", "-c", "echo $TOKEN"], "env": {"TOKEN": "s3cret"},
            "files": {"in/a.txt": "YWJj"}, "outputs": ["out.txt", "log/err.txt"]}  # fmt: skip
    gateway.states = [job(spec=spec, status="running", node_id="n1", attempt=1)]
    code, out, err = fogctl("job", "get", "j1")
    assert code == 0, err
    lines = out.splitlines()
    assert "command      sh -c 'echo $TOKEN'" in lines
    assert "env          TOKEN" in lines
    assert "files        in/a.txt (3 B)" in lines
    assert "outputs      out.txt, log/err.txt" in lines
    assert "resources    1 CPU, 256.0 MiB, 0 GPU" in lines
    assert "attempt      1 of 3" in lines
    assert "timeout      3600 s" in lines
    assert "s3cret" not in out

    code, out, _ = fogctl("job", "get", "j1", "--json")
    assert json.loads(out)["spec"]["env"] == {"TOKEN": "s3cret"}


def test_cancel_says_what_became_of_the_job(gateway: Gateway, logged_in: Session) -> None:
    for state, says in [
        ("cancelled", "Cancelled job j1."),
        ("succeeded", "Job j1 had already ended (succeeded): nothing to cancel."),
        ("running", "Cancelling job j1: it is running until its node has stopped it."),
    ]:
        gateway.states = [job(status=state)]
        code, _, err = fogctl("job", "cancel", "j1")
        assert code == 0, err
        assert says in err
    assert {(r.method, r.url.path) for r in gateway.requests} == {("POST", "/v1/jobs/j1/cancel")}


def test_explain_a_pending_job_lists_the_filters_most_common_first(gateway: Gateway, logged_in: Session) -> None:
    gateway.explanation = {
        "job_id": "j1",
        "status": "pending",
        "decided_at": NOW,
        "summary": "no node fits: 6 examined (1 node down, 5 too little memory)",
        "filtered": {"node down": 1, "too little memory": 5},
        "candidates": [],
    }
    code, out, err = fogctl("job", "explain", "j1")
    assert code == 0, err
    assert out.splitlines() == [
        "Job j1 is pending.",
        "Decided 2030-01-02 03:04:05 UTC: no node fits: 6 examined (1 node down, 5 too little memory)",
        "Nodes left out:",
        "      5  too little memory",
        "      1  node down",
    ]


def test_explain_a_placed_job_shows_the_candidates_with_scores(gateway: Gateway, logged_in: Session) -> None:
    gateway.explanation = {
        "job_id": "j1",
        "status": "running",
        "decided_at": NOW,
        "summary": "placed on n2 among 2 candidates",
        "filtered": {},
        "candidates": [
            {"node_id": "n2", "score": 81.5, "parts": {"fit": 70.0, "affinity": 10.0, "reputation": 1.5}},
            {"node_id": "n1", "score": 40.0, "parts": {"fit": 40.0}},
        ],
    }
    code, out, err = fogctl("job", "explain", "j1")
    assert code == 0, err
    assert "Candidates, best first:" in out
    assert cells(out, "┃") == [["node", "score", "parts"]]
    assert cells(out, "│") == [
        ["n2", "81.5", "fit 70.0, affinity 10.0, reputation 1.5"],
        ["n1", "40.0", "fit 40.0"],
    ]

    code, out, _ = fogctl("job", "explain", "j1", "--json")
    assert json.loads(out)["candidates"][0]["node_id"] == "n2"


def test_a_job_not_yet_considered_says_so(gateway: Gateway, logged_in: Session) -> None:
    gateway.explanation = {"job_id": "j1", "status": "pending", "decided_at": None, "filtered": {}, "candidates": []}
    code, out, _ = fogctl("job", "explain", "j1")
    assert (code, out) == (0, "Job j1 is pending.\nThe scheduler has not considered it yet.\n")


def test_submit_after_other_jobs_names_each_once_after_the_spec_files(
    gateway: Gateway, logged_in: Session, tmp_path: Path
) -> None:
    first, second, array = "0f8e5a8e-0000-4000-8000-000000000001", "0f8e5a8e-0000-4000-8000-000000000002", "a" * 32
    spec = tmp_path / "ship.yaml"
    spec.write_text(f"command: [ship]\nafter: [{first}]\n")
    code, _, err = fogctl(
        "job", "submit", "--spec", str(spec), "--after", second, "--after", first, "--after-any", array
    )  # fmt: skip
    assert code == 0, err
    assert gateway.sent()["after"] == [first, second]  # the file's, then the flags' not in it
    assert gateway.sent()["after_any"] == [array]  # as given: the gateway reads any form of a uuid


def test_a_job_waiting_for_others_says_for_how_many_in_lists_and_alone(gateway: Gateway, logged_in: Session) -> None:
    waiting = job(waiting_for=2, spec={**DEFAULT_SPEC, "after": ["j7", "j8"]})
    gateway.pages = {None: {"items": [waiting, job("j2", waiting_for=1), job("j3")], "next_cursor": None}}
    gateway.states = [waiting]
    code, out, err = fogctl("job", "list")
    assert code == 0, err
    assert [row[2] for row in cells(out, "│")] == ["pending, waits for 2 jobs", "pending, waits for 1 job", "pending"]
    code, out, err = fogctl("job", "get", "j1")
    assert code == 0, err
    assert "pending, waits for 2 jobs" in out
    assert "j7, j8" in out


def test_submit_wait_says_the_job_waits_for_others_first(gateway: Gateway, logged_in: Session) -> None:
    gateway.states = [job(status="succeeded", exit_code=0)]
    gateway.outputs = [running_output("done\n", ended=True)]
    first, second = "0f8e5a8e-0000-4000-8000-000000000001", "0f8e5a8e-0000-4000-8000-000000000002"
    code, out, err = fogctl("job", "submit", "--wait", "--after", first, "--after-any", second, "--", "true")
    assert (code, out) == (0, "done\n")
    assert "Submitted job j1; waiting for it to end. It waits for 2 jobs first." in err


def test_explain_a_job_waiting_for_others_lists_them(gateway: Gateway, logged_in: Session) -> None:
    gateway.explanation = {
        "job_id": "j1", "status": "pending", "decided_at": None, "filtered": {}, "candidates": [],
        "summary": "waiting for 22 jobs first: j7 to succeed (running), j8 to end (pending), and 20 more",
        "waiting_for": [{"job_id": "j7", "status": "running", "needs": "success"},
                        {"job_id": "j8", "status": "pending", "needs": "end"}], "waiting_count": 22,
    }  # fmt: skip
    code, out, err = fogctl("job", "explain", "j1")
    assert code == 0, err
    assert out.splitlines() == [
        "Job j1 is pending.", "It waits for these jobs first:", "  j7  to succeed  (running)",
        "  j8  to end  (pending)", "  and 20 more",
    ]  # fmt: skip


def test_someone_elses_job_exits_1_with_the_problem(gateway: Gateway, logged_in: Session) -> None:
    for command in ("get", "logs", "cancel", "explain", "wait"):
        code, _, err = fogctl("job", command, "j9")
        assert code == 1
        assert f"{URL} refused: 404 not found [not_found]" in err


# -- arrays --------------------------------------------------------------------------------------------


def test_array_show_counts_the_jobs_in_the_order_they_go(gateway: Gateway, logged_in: Session) -> None:
    gateway.arrays = [summary({"succeeded": 6, "running": 2, "pending": 1, "failed": 1})]
    code, out, err = fogctl("job", "array", "show", "a1")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["array", "a1"]
    assert rows[2] == ["jobs", "10", "(7", "ended)"]
    assert rows[3:] == [["pending", "1"], ["running", "2"], ["succeeded", "6"], ["failed", "1"]]

    code, out, err = fogctl("job", "array", "show", "a1", "--json")
    assert code == 0, err
    assert json.loads(out) == gateway.arrays[0]
    assert {(r.method, r.url.path) for r in gateway.requests} == {("GET", "/v1/jobs/arrays/a1")}


def test_array_cancel_says_whether_any_job_is_left(gateway: Gateway, logged_in: Session) -> None:
    gateway.arrays = [summary({"succeeded": 3, "cancelled": 7})]
    code, out, err = fogctl("job", "array", "cancel", "a1")
    assert code == 0, err
    assert "cancelled  7" in out
    assert "Every job of array a1 has ended (7 cancelled)." in err

    gateway.arrays = [summary({"cancelled": 9, "pending": 1})]  # one was held by its placement too long
    code, _, err = fogctl("job", "array", "cancel", "a1")
    assert code == 0, err
    assert "1 jobs of array a1 are still to be cancelled: ask again." in err
    assert {(r.method, r.url.path) for r in gateway.requests} == {("POST", "/v1/jobs/arrays/a1/cancel")}


@pytest.mark.parametrize(
    ("last", "expected"), [({"succeeded": 10}, 0), ({"succeeded": 9, "failed": 1}, 1), ({"cancelled": 10}, 1)]
)
def test_array_wait_asks_until_every_job_ended_and_exits_0_only_if_all_succeeded(
    gateway: Gateway, logged_in: Session, last: dict[str, int], expected: int
) -> None:
    gateway.arrays = [summary({"pending": 10}), summary({"running": 4, "succeeded": 6}), summary(last)]
    code, out, err = fogctl("job", "array", "wait", "a1", "--json")
    assert code == expected, err
    assert json.loads(out)["statuses"] == last
    assert len(gateway.requests) == 3


def test_someone_elses_array_exits_1_with_the_problem(gateway: Gateway, logged_in: Session) -> None:
    for command in ("show", "cancel", "wait"):
        code, _, err = fogctl("job", "array", command, "a2")
        assert code == 1
        assert f"{URL} refused: 404 not found [not_found]" in err


# -- rerun -------------------------------------------------------------------------------------------


def test_rerun_submits_the_jobs_spec_again_as_a_new_job(gateway: Gateway, logged_in: Session) -> None:
    asked = {**DEFAULT_SPEC, "env": {"FOG_ARRAY_INDEX": "3"}, "name": "calc", "idempotency_key": "nightly-1"}
    gateway.states = [job(spec=asked, status="failed", array_id="a1", array_index=3)]
    code, out, err = fogctl("job", "rerun", "j1")
    assert code == 0, err
    assert out == "j1\n"
    (read, submitted) = gateway.requests
    assert (read.method, read.url.path) == ("GET", "/v1/jobs/j1")
    assert (submitted.method, submitted.url.path) == ("POST", "/v1/jobs")
    body = json.loads(submitted.content)
    assert body["command"] == DEFAULT_SPEC["command"]
    assert (body["env"], body["name"]) == ({"FOG_ARRAY_INDEX": "3"}, "calc")  # as the array gave it its index
    assert body.get("idempotency_key") is None  # the same key would answer the first job, not run it again


def test_rerun_wait_follows_the_new_job_and_exits_with_its_code(gateway: Gateway, logged_in: Session) -> None:
    gateway.states = [job(status="failed", exit_code=3), job(status="running"), job(status="succeeded", exit_code=0)]
    gateway.output = {"output": "hi\n", "truncated": False, "exit_code": 0, "length": 3, "ended": True, "attempt": 1}
    code, out, err = fogctl("job", "rerun", "j1", "--wait")
    assert code == 0, err
    assert "Submitted job j1" in err
    assert "hi" in out


# -- files ---------------------------------------------------------------------------------------------------


def test_submit_sends_the_files_given_and_the_outputs_asked(
    gateway: Gateway, logged_in: Session, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n\x00")
    code, _, err = fogctl(
        "job", "submit", "--file", str(data), "--file", f"{data}:in/copy.csv", "--output", "out/r.txt", "--", "true"
    )
    assert code == 0, err
    sent = gateway.sent()
    assert sent["files"] == {"data.csv": "YSxiCgA=", "in/copy.csv": "YSxiCgA="}  # named as the local file, or as asked
    assert sent["outputs"] == ["out/r.txt"]


def test_submit_without_files_sends_no_files_field_and_a_missing_local_file_is_refused(
    gateway: Gateway, logged_in: Session, tmp_path: Path
) -> None:
    assert fogctl("job", "submit", "--", "true")[0] == 0
    assert not {"files", "outputs", "after", "after_any"} & gateway.sent().keys()  # an older gateway refuses them
    code, _, err = fogctl("job", "submit", "--file", str(tmp_path / "nope"), "--", "true")
    assert code == 2
    assert "cannot read" in err


SPEC_FILE = """\
# a job kept with its project
command: [python3, train.py, --epochs, "3"]
name: train
env: {MODE: full, SEED: "7"}
resources: {cpu_cores: 2, memory_bytes: 1073741824}
constraints: {labels: {zone: a}, region: eu-west}
affinities: [{label: disk, value: ssd, weight: 20}]
timeout_s: 600
outputs: [model.bin]
files: {train.py: cHJpbnQoMSkK}
"""


def test_submit_takes_a_spec_file_and_the_flags_given_with_it_win(
    gateway: Gateway, logged_in: Session, tmp_path: Path
) -> None:
    spec = tmp_path / "train.yaml"
    spec.write_text(SPEC_FILE)
    code, out, err = fogctl(
        "job", "submit", "--spec", str(spec), "--env", "SEED=8", "--label", "gpu=t4", "--cpu", "4",
        "--affinity", "rack=r1:5", "--output", "log.txt", "--timeout", "900",
    )  # fmt: skip
    assert code == 0, err
    assert out == "j1\n"
    sent = gateway.sent()
    assert sent["command"] == ["python3", "train.py", "--epochs", "3"]
    assert sent["env"] == {"MODE": "full", "SEED": "8"}  # the flag's over the file's
    assert sent["resources"] == {"cpu_cores": 4, "memory_bytes": 1 << 30, "gpus": 0}
    assert sent["constraints"] == {"labels": {"zone": "a", "gpu": "t4"}, "region": "eu-west"}
    assert sent["affinities"] == [
        {"label": "disk", "value": "ssd", "weight": 20}, {"label": "rack", "value": "r1", "weight": 5}
    ]  # fmt: skip
    assert (sent["name"], sent["timeout_s"], sent["priority"]) == ("train", 900, 50)
    assert sent["outputs"] == ["model.bin", "log.txt"]
    assert sent["files"] == {"train.py": "cHJpbnQoMSkK"}

    code, _, err = fogctl("job", "submit", "--spec", str(spec), "--", "python3", "eval.py")
    assert code == 0, err
    assert json.loads(gateway.requests[-1].content)["command"] == ["python3", "eval.py"]  # a command replaces it


def test_a_spec_as_json_on_stdin_is_taken_too(gateway: Gateway, logged_in: Session) -> None:
    result = runner.invoke(
        app, ["job", "submit", "--spec", "-"], input=json.dumps({"command": ["true"], "priority": 90})
    )
    assert result.exit_code == 0, result.stderr
    assert (gateway.sent()["command"], gateway.sent()["priority"]) == (["true"], 90)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("comand: [echo, hi]\n", "unknown field(s) comand"),
        ("command: [echo]\nresources: {cpu: 2}\n", "unknown field(s) resources.cpu"),
        ("command: [echo]\naffinities: [{label: a, value: b, weight: 1, wieght: 2}]\n", "affinities[0].wieght"),
        ("- echo\n- hi\n", "holds no mapping"),
        ("command: [echo\n", "neither YAML nor JSON"),
        ("env: {A: b}\n", "no command"),
        ("command: [echo]\ntimeout_s: soon\n", "timeout_s"),
    ],
)
def test_a_spec_file_that_is_wrong_is_refused_before_anything_is_sent(
    gateway: Gateway, logged_in: Session, tmp_path: Path, content: str, said: str
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(content)
    code, _, err = fogctl("job", "submit", "--spec", str(spec))
    assert code == 2, err
    assert said in " ".join(err.split()), err  # Rich wraps the message in its box
    assert gateway.requests == []


def test_a_jobs_spec_printed_as_yaml_is_submitted_again_as_it_was(
    gateway: Gateway, logged_in: Session, tmp_path: Path
) -> None:
    code, out, err = fogctl("job", "get", "j1", "--spec")
    assert code == 0, err
    assert out.startswith("command:\n- echo\n- hi\n")
    assert "null" not in out  # what was not set is left out
    kept = tmp_path / "job.yaml"
    kept.write_text(out)
    code, _, err = fogctl("job", "submit", "--spec", str(kept))
    assert code == 0, err
    sent = json.loads(gateway.requests[-1].content)
    assert {key: sent.get(key) for key in DEFAULT_SPEC} == DEFAULT_SPEC  # the job's spec, field for field


def test_timeouts_and_backoffs_take_units(gateway: Gateway, logged_in: Session) -> None:
    code, _, err = fogctl("job", "submit", "--timeout", "10m", "--retry-backoff", "1.5", "--", "true")
    assert code == 0, err
    assert (gateway.sent()["timeout_s"], gateway.sent()["retry_backoff_s"]) == (600, 1.5)
    code, _, err = fogctl("job", "submit", "--timeout", "soon", "--", "true")
    assert code == 2
    assert "is not a duration such as 90, 45s, 10m or 2h" in " ".join(err.split())
    assert len(gateway.requests) == 1
