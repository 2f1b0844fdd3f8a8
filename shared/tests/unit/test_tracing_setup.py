"""SQL spans cost a statement ~0.1-0.4 ms: they are recorded only where spans go (an exporter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from fog_shared.telemetry import configure_tracing
configure_tracing("probe", sys.argv[1] or None)
print(AsyncPGInstrumentor().is_instrumented_by_opentelemetry)
"""


def sql_spans_recorded(otlp_endpoint: str) -> bool:
    # A process of its own: instrumentation is global, and other tests set it up their way.
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, otlp_endpoint], capture_output=True, text=True, timeout=60, check=True
    )
    return probe.stdout.strip() == "True"


@pytest.mark.parametrize(("endpoint", "recorded"), [("", False), ("http://127.0.0.1:4318/v1/traces", True)])
def test_sql_is_traced_only_when_spans_are_exported(endpoint: str, recorded: bool) -> None:
    assert sql_spans_recorded(endpoint) is recorded
