"""Spans cost: they are recorded, and SQL traced, only where spans go (an exporter).

Each case runs in a process of its own: the tracer provider and the instrumentation are global, and other
tests set them up their way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

PROBE = """
import json, sys
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from fog_shared.telemetry import configure_tracing

configure_tracing("probe", sys.argv[1] or None)
if sys.argv[2] == "later":  # a processor added once the provider exists (as the test harness does)
    configure_tracing("probe", extra_processor=SimpleSpanProcessor(InMemorySpanExporter()))
tracer = trace.get_tracer("probe")
with tracer.start_as_current_span("root") as root:
    root_recorded = root.is_recording()
    carrier = {}
    propagate.inject(carrier)
sampled_parent = propagate.extract({"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
with tracer.start_as_current_span("child", context=sampled_parent) as child:
    child_recorded = child.is_recording()
print(json.dumps({
    "sql_traced": AsyncPGInstrumentor().is_instrumented_by_opentelemetry,
    "root_recorded": root_recorded,
    "root_trace_id": format(root.get_span_context().trace_id, "032x"),
    "traceparent": carrier.get("traceparent", ""),
    "child_of_sampled_recorded": child_recorded,
}))
"""
ENDPOINT = "http://127.0.0.1:4318/v1/traces"


def probe(otlp_endpoint: str, processor: str = "") -> dict[str, Any]:
    ran = subprocess.run(
        [sys.executable, "-c", PROBE, otlp_endpoint, processor], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, Any] = json.loads(ran.stdout)
    return result


CASES = [("", "", False), (ENDPOINT, "", True), ("", "later", True)]


@pytest.mark.parametrize(("endpoint", "processor", "exported"), CASES)
def test_spans_are_recorded_and_sql_traced_only_when_spans_are_exported(
    endpoint: str, processor: str, exported: bool
) -> None:
    seen = probe(endpoint, processor)
    assert seen["sql_traced"] is exported
    assert seen["root_recorded"] is exported


def test_unrecorded_spans_still_carry_trace_ids_and_a_sampled_parent_is_followed() -> None:
    seen = probe("")
    assert seen["root_trace_id"] != "0" * 32
    assert seen["traceparent"].startswith(f"00-{seen['root_trace_id']}-")  # the next service joins the trace
    assert int(seen["traceparent"][-2:], 16) & 1 == 0  # ...unsampled, as begun here
    assert seen["child_of_sampled_recorded"] is True  # a sampled trace from an exporting caller stays whole
