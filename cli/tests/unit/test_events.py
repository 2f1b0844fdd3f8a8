"""``fogctl events ...`` with the saved session, against a scripted gateway (MockTransport)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from scripted_gateway import script_gateway
from typer.testing import CliRunner

from fog_client import StoredEvent
from fogctl import events
from fogctl.__main__ import app
from fogctl.events import parse_moment
from fogctl.session import Session

URL = "http://gateway.test"
NOW = "2030-01-02T03:04:05+00:00"


def stored(seq: int, kind: str = "scheduler.job.submitted.v1", **changes: Any) -> dict[str, Any]:
    body = {
        "stream": "EVT_SCHEDULER", "seq": seq, "subject": f"fog.evt.{kind}", "stored_at": NOW, "id": f"e{seq}",
        "type": kind, "source": "fog/scheduler", "time": NOW, "aggregate_id": "j1", "correlation_id": "req-1",
        "causation_id": None, "trace_id": None, "data": {"job_id": "j1"}, "dead_letter": None, "redrive_of": None,
    }  # fmt: skip
    return {**body, **changes}


def page(items: list[dict[str, Any]], cursor: str, more: bool = False, gaps: Any = ()) -> dict[str, Any]:
    return {"items": items, "gaps": list(gaps), "cursor": cursor, "more": more}


GAP = {"stream": "EVT_SCHEDULER", "first_retained_seq": 7, "first_retained_at": NOW, "detail": "dropped by retention"}
PARKED = stored(
    3, "registry.node.retired.v2", stream="DLQ", subject="fog.dlq.scheduler__nodes",
    dead_letter={"consumer": "scheduler__nodes", "reason": "invalid", "error": "unknown event type\nmore",
                 "stream": "EVT_REGISTRY", "stream_seq": 9, "subject": "fog.evt.registry.node.retired.v2",
                 "deliveries": 1},
)  # fmt: skip


class Gateway:
    """Event pages by cursor; a trace; one dead letter (seq 3)."""

    def __init__(self) -> None:
        self.pages: dict[str | None, dict[str, Any]] = {
            None: page([stored(1)], "EVT_SCHEDULER:2", more=True, gaps=[GAP]),
            "EVT_SCHEDULER:2": page([stored(2, "scheduler.job.completed.v1")], "EVT_SCHEDULER:3"),
        }
        self.requests: list[httpx.Request] = []
        self.rebuild_report: dict[str, Any] = {
            "service": "scheduler", "read_model": "nodes", "consumer": "scheduler__nodes", "replayed_to_seq": 5,
            "events_replayed": 5, "events_skipped": 0, "rows_live": 1, "rows_rebuilt": 1, "differences": [],
            "gaps": [],
        }  # fmt: skip

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        match request.method, request.url.path:
            case "GET", "/v1/admin/events":
                cursor = request.url.params.get("cursor")
                return httpx.Response(200, json=self.pages.get(cursor, page([], cursor or "")))
            case "GET", "/v1/admin/events/trace/req-1":
                steps = [
                    {"event": stored(1), "depth": 0, "offset_ms": 0, "after_cause_ms": None},
                    {"event": stored(2, "scheduler.job.assigned.v1", causation_id="e1"), "depth": 1,
                     "offset_ms": 12.5, "after_cause_ms": 12.5},
                ]  # fmt: skip
                trace = {"correlation_id": "req-1", "trace_ids": ["a" * 32], "started_at": NOW, "duration_ms": 12.5,
                         "steps": steps, "gaps": []}  # fmt: skip
                return httpx.Response(200, json=trace)
            case "GET", "/v1/admin/events/trace/unknown":
                empty = {"correlation_id": "unknown", "trace_ids": [], "started_at": None, "duration_ms": 0,
                         "steps": [], "gaps": []}  # fmt: skip
                return httpx.Response(200, json=empty)
            case "GET", "/v1/admin/dead-letters":
                return httpx.Response(200, json=page([PARKED], "DLQ:4"))
            case "GET", "/v1/admin/dead-letters/3":
                return httpx.Response(200, json=PARKED)
            case "POST", "/v1/admin/dead-letters/3/redrive":
                redriven = {"dead_letter_seq": 3, "consumer": "scheduler__nodes", "stream": "EVT_REGISTRY",
                            "subject": "fog.evt.registry.node.retired.v2", "seq": 10}  # fmt: skip
                return httpx.Response(200, json=redriven)
            case "POST", "/v1/admin/rebuild/scheduler":
                return httpx.Response(200, json=self.rebuild_report)
            case "POST", "/v1/admin/rebuild/messaging":
                read_model = request.url.params["read_model"]
                consumer = f"messaging__{read_model}"
                report = {**self.rebuild_report, "service": "messaging", "read_model": read_model, "consumer": consumer}
                if read_model == "node_owners":
                    report["differences"] = [{"key": "n7", "kind": "changed", "columns": {"revoked": [False, True]}}]
                return httpx.Response(200, json=report)
        body = {"type": "urn:fog:problem:not_found", "title": "Not found", "status": 404, "detail": "no such thing"}
        return httpx.Response(404, json=body, headers={"Content-Type": "application/problem+json"})

    def params(self, index: int) -> dict[str, str]:
        return dict(self.requests[index].url.params)


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Gateway:
    fake = Gateway()
    script_gateway(monkeypatch, fake)
    monkeypatch.setattr(events, "POLL_S", 0)
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    monkeypatch.setenv("COLUMNS", "250")
    Session(URL, "root@example.org", "a1", "r1").save()
    return fake


runner = CliRunner()


def fogctl(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_times_are_ago_or_rfc_3339() -> None:
    now = datetime(2030, 1, 2, tzinfo=UTC)
    assert parse_moment("10m", now=now) == now - timedelta(minutes=10)
    assert parse_moment("2d", now=now) == now - timedelta(days=2)
    assert parse_moment("2030-01-01T00:00:00", now=now) == datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_moment(None) is None
    with pytest.raises(typer.BadParameter):
        parse_moment("yesterday")


def test_history_of_a_job_reads_the_scheduler_stream_and_says_where_the_gap_is(gateway: Gateway) -> None:
    code, out, err = fogctl("events", "history", "--job", "j1", "--since", "1h")
    assert code == 0, err
    sent = gateway.params(0)
    assert sent["aggregate_id"] == "j1"
    assert sent["subject"] == "fog.evt.scheduler.>"
    assert datetime.fromisoformat(sent["since"]) < datetime.now(UTC)
    assert "scheduler.job.submitted.v1" in out
    assert "GAP: dropped by retention" in err
    assert "--cursor EVT_SCHEDULER:2" in err


def test_each_event_shows_its_facts_on_its_line(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "500")
    node = "0cba2c5c-c5ab-43b4-8f90-03010ba17133"
    failed = {"job_id": "j1", "node_id": node, "reason": "attempt 1 of 3 failed: exit code 3; tried again in 1 s",
              "node_fault": False, "failed_at": NOW, "attempt": 1, "exit_code": 3, "retried": True,
              "audience": ["a", "b"], "assignment": {"command": ["true"]}, "many": list(range(9)), "gone": None,
              "after": [], "labels": {}, "note": "[bold]x"}  # fmt: skip
    gateway.pages[None] = page([stored(1, "scheduler.job.failed.v1", data=failed)], "EVT_SCHEDULER:2")
    code, out, err = fogctl("events", "history", "--job", "j1")
    assert code == 0, err
    facts = (
        "node_id=0cba2c5c reason='attempt 1 of 3 failed: exit code 3; tried again in 1 s' node_fault=false "
        "attempt=1 exit_code=3 retried=true audience=[a,b] assignment={…} many=[9 items] note='[bold]x'"
    )  # text in brackets is shown, never taken for markup
    assert facts in out  # not the job's own id, nor the times, nor what is absent
    assert events.gist(StoredEvent.model_validate(stored(2, data="not an object"))) == ""
    long_value = events.gist(StoredEvent.model_validate(stored(3, data={"reason": "[red]x" * 500})))
    assert long_value.startswith("reason='[red]x")
    assert len(long_value) == len("reason=''") + events.GIST_VALUE_CHARS
    many_values = events.gist(StoredEvent.model_validate(stored(4, data={f"k{i}": "v" * 100 for i in range(9)})))
    assert len(many_values) == events.GIST_CHARS
    assert many_values.endswith("…")
    relabelled = {"node_id": node, "labels": {"gpu": "a100", "site": "a"}, "previous_labels": {"site": "a", "x": "y"}}
    assert events.gist(StoredEvent.model_validate(stored(5, data=relabelled))) == (
        "labels.gpu=null→a100 labels.x=y→null node_id=0cba2c5c"
    )  # what changed, entry by entry; not the whole sets
    disk = {"disk_bytes": 1 << 30, "networks": ["host"]}
    declared = {"capabilities": {**disk, "disk_bytes": 8 << 30}, "previous_capabilities": disk}
    assert events.gist(StoredEvent.model_validate(stored(6, data=declared))) == (
        "capabilities.disk_bytes=1073741824→8589934592"
    )
    _, traced, _ = fogctl("events", "trace", "req-1")
    assert traced.splitlines()[1].endswith("EVT_SCHEDULER:1")  # data {"job_id": "j1"}: its aggregate, no more


def test_history_all_follows_the_pages_and_json_gives_one_line_each(gateway: Gateway) -> None:
    code, out, err = fogctl("events", "history", "--all", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["gap"]["first_retained_seq"] == GAP["first_retained_seq"]
    assert [line["seq"] for line in lines[1:]] == [1, 2]
    assert gateway.params(1)["cursor"] == "EVT_SCHEDULER:2"


def test_one_aggregate_at_a_time(gateway: Gateway) -> None:
    code, _, err = fogctl("events", "history", "--job", "j1", "--node", "n1")
    assert code == 2
    assert "one of --job" in err


def test_tail_follows_the_cursor_until_count(gateway: Gateway) -> None:
    code, out, err = fogctl("events", "tail", "--count", "2", "--json")
    assert code == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert [line["seq"] for line in printed if "gap" not in line] == [1, 2]
    assert "since" in gateway.params(0)
    assert gateway.params(1)["cursor"] == "EVT_SCHEDULER:2"


def test_trace_prints_the_tree_with_timings(gateway: Gateway) -> None:
    code, out, err = fogctl("events", "trace", "req-1")
    assert code == 0, err
    lines = out.splitlines()
    assert "request req-1" in lines[0]
    assert "a" * 32 in lines[0]
    assert "scheduler.job.submitted.v1" in lines[1]
    assert "└─ scheduler.job.assigned.v1" in lines[2]
    assert "(+12 ms)" in lines[2] or "(+13 ms)" in lines[2]


def test_a_trace_with_no_events_fails(gateway: Gateway) -> None:
    code, _, err = fogctl("events", "trace", "unknown")
    assert code == 1
    assert "no events" in err


def test_dead_letters_listed_shown_and_redriven(gateway: Gateway) -> None:
    code, out, err = fogctl("events", "dlq", "list")
    assert code == 0, err
    assert "scheduler__nodes" in out
    assert "unknown event type" in out
    code, out, err = fogctl("events", "dlq", "show", "3")
    assert code == 0, err
    assert "EVT_REGISTRY:9 fog.evt.registry.node.retired.v2" in out
    assert "unknown event type\nmore" in out
    code, out, err = fogctl("events", "dlq", "redrive", "3")
    assert code == 0, err
    assert out == "re-drove dead letter 3 to scheduler__nodes: EVT_REGISTRY:10 fog.evt.registry.node.retired.v2\n"
    code, _, err = fogctl("events", "dlq", "show", "4")
    assert code == 1
    assert "no such thing" in err


def test_rebuild_says_no_differences_or_lists_them_and_fails(gateway: Gateway) -> None:
    code, out, err = fogctl("events", "rebuild", "scheduler")
    assert code == 0, err
    assert "replayed 5 events of scheduler__nodes" in out
    assert out.endswith("no differences\n")
    gateway.rebuild_report["differences"] = [
        {"key": "n1", "kind": "changed", "columns": {"reputation": [0.01, 0.5]}},
        {"key": "n2", "kind": "missing_rebuilt", "columns": {}},
    ]
    code, out, _ = fogctl("events", "rebuild", "scheduler")
    assert code == 1
    assert "n1: reputation: live 0.01, rebuilt 0.5" in out
    assert "n2: missing rebuilt" in out


def test_rebuild_of_messaging_rebuilds_each_of_its_read_models_or_the_one_named(gateway: Gateway) -> None:
    code, out, err = fogctl("events", "rebuild", "messaging")
    assert code == 1, err  # node_owners differs
    asked = [request.url.params.get("read_model") for request in gateway.requests]
    assert asked == ["users", "node_owners"]
    assert "messaging users: replayed 5 events of messaging__users" in out
    assert "n7: revoked: live False, rebuilt True" in out

    code, out, err = fogctl("events", "rebuild", "messaging", "--read-model", "users", "--json")
    assert code == 0, err
    (report,) = [json.loads(line) for line in out.splitlines()]
    assert (report["read_model"], report["differences"]) == ("users", [])
