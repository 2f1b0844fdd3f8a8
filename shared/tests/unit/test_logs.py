"""JSON log lines carry the service, trace id, span id and correlation id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from fog_shared.telemetry import configure_logging, use_correlation_id


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_log_line_inside_a_span_names_its_trace_and_correlation(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("scheduler", "INFO", json_lines=True)
    span_tracer = TracerProvider().get_tracer("test")
    with use_correlation_id("req-42"), span_tracer.start_as_current_span("submit") as span:
        logging.getLogger("fog.test").info("job submitted", extra={"job": "j1"})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "job submitted"
    assert line["service"] == "scheduler"
    assert line["correlation_id"] == "req-42"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert line["job"] == "j1"
    assert line["level"] == "INFO"
