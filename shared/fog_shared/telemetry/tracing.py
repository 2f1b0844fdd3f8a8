"""OpenTelemetry set-up and W3C trace context helpers.

Spans are exported over OTLP/HTTP when an endpoint is configured, and only then recorded: a
process that exports nothing starts its spans unsampled (the SDK's ``NonRecordingSpan``). They
still carry trace ids, to logs, events and the next service's headers, so a request's logs join
up across services either way; what is skipped is building span objects nobody reads (an RPC's
way has five; ``bench/request_reply.py`` here: 1.10-1.13 ms a request/reply with them recorded,
0.92-0.99 without). A span whose remote parent was sampled is recorded all the same, so
that a process exporting nothing does not cut the sampled traces of those that export.
With an exporter, ``OTEL_TRACES_SAMPLER`` decides as usual (by default: every trace).

With an exporter, asyncpg is instrumented too, so SQL shows as child spans. Not before: a
statement's span is seen only where spans go, and it costs (measured here: a transaction of BEGIN,
INSERT and COMMIT took 0.92 ms with it, 0.50 ms without).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult

_configured = False


class SampledWhenExported(Sampler):
    """The configured sampler once the process exports spans; before, new traces start unsampled."""

    def __init__(self, when_exported: Sampler) -> None:
        self.exporting = False
        self._when_exported = when_exported
        # A sampled remote parent keeps its child recorded (ParentBased's default): see the module's docstring.
        self._until_then = ParentBased(root=ALWAYS_OFF)

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        sampler = self._when_exported if self.exporting else self._until_then
        return sampler.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"SampledWhenExported({self._when_exported.get_description()})"


def configure_tracing(
    service: str, otlp_endpoint: str | None = None, extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install the global tracer provider once per process; later calls return it."""
    global _configured
    provider = trace.get_tracer_provider()
    if _configured and isinstance(provider, TracerProvider):
        if extra_processor is not None:
            provider.add_span_processor(extra_processor)
            _exporting(provider)
        return provider
    sampler = SampledWhenExported(sampling_from_environment())
    provider = TracerProvider(resource=Resource.create({"service.name": f"fog-{service}"}), sampler=sampler)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    trace.set_tracer_provider(provider)
    if otlp_endpoint or extra_processor is not None:
        _exporting(provider)
    _configured = True
    return provider


def sampling_from_environment() -> Sampler:
    """What ``OTEL_TRACES_SAMPLER`` (and its argument) asks for; by default, parent-based, always on."""
    return sampling._get_from_env_or_default()


def _exporting(provider: TracerProvider) -> None:
    if isinstance(provider.sampler, SampledWhenExported):
        provider.sampler.exporting = True
    _instrument_asyncpg()


def _instrument_asyncpg() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def tracer(name: str = "fog") -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> tuple[str | None, str | None]:
    """The W3C ``traceparent``/``tracestate`` of the current span, to store with an event."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def trace_id_hex() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None
