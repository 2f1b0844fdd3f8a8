"""What one request/reply costs through FastStream with Fog's broker middlewares, and without them.

Starts its own NATS server. A responder process subscribes as a service handler does (a pydantic
body, a dict reply, ``AckPolicy.NACK_ON_ERROR``) and a caller process asks with
``fog_shared.bus.rpc.request``, both on uvloop as the services run. Each row is one combination of
middlewares on both sides (``t``: FastStream's OpenTelemetry middleware, ``p``: its Prometheus
middleware, ``c``: Fog's correlation middleware; ``-``: none), with the tracer provider as
``configure_tracing`` sets it up (nothing exported, so spans are not recorded) or, with
``--record``, recording every span. Latency p50/p90 over ``--requests`` requests back to back,
then over ``--requests // 5`` requests ``--gap`` seconds apart (each one finds both processes
asleep, as a lone request on an idle stack does).

Usage: ``python bench/request_reply.py [--middlewares tpc,-,t,p,c] [--record] [--requests 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from faststream import AckPolicy
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from fog_shared.bus.broker import CorrelationMiddleware
from fog_shared.bus.push import push_headers
from fog_shared.bus.rpc import request
from fog_shared.devservers import NatsServer
from fog_shared.telemetry import configure_tracing

SUBJECT = "bench.request_reply"


class Submit(BaseModel):
    owner_id: str
    spec: dict[str, Any]


BODY = Submit(owner_id="u" * 36, spec={"command": ["date", "+%s%N"], "env": {}, "resources": {"cpu_cores": 0.25}})


def middlewares(which: str) -> tuple[Any, ...]:
    chosen: list[Any] = []
    if "t" in which:
        chosen.append(NatsTelemetryMiddleware())
    if "p" in which:
        chosen.append(NatsPrometheusMiddleware(registry=CollectorRegistry(), app_name="bench", metrics_prefix="fog"))
    if "c" in which:
        chosen.append(CorrelationMiddleware)
    return tuple(chosen)


def set_up_tracing(record: bool) -> None:
    if record:  # as a process that exports its spans does
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        configure_tracing("bench", extra_processor=SimpleSpanProcessor(exporter))
    else:
        configure_tracing("bench")


async def respond(url: str, which: str, record: bool) -> None:
    set_up_tracing(record)
    broker = NatsBroker(url, ack_policy=AckPolicy.NACK_ON_ERROR, middlewares=middlewares(which), logger=None)

    @broker.subscriber(SUBJECT, queue="bench")
    async def handle(body: Submit) -> dict[str, Any]:
        return {"created": True, "job": {"id": "j" * 36, "status": "assigned", **body.spec}}

    await broker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def ask(url: str, which: str, record: bool, requests: int, gap_s: float, raw: bool) -> None:
    set_up_tracing(record)
    broker = NatsBroker(url, middlewares=middlewares(which), logger=None)
    await broker.start()
    nc = await nats.connect(url)

    async def one() -> None:
        if not raw:
            await request(broker, SUBJECT, BODY, timeout=5)
            return
        with trace.get_tracer("bench").start_as_current_span("ask"):
            reply = await nc.request(SUBJECT, BODY.model_dump_json().encode(), timeout=5, headers=push_headers())
            json.loads(reply.data)

    for _ in range(50):
        await one()
    for count, gap in ((requests, 0.0), (max(1, requests // 5), gap_s)):
        took = []
        for _ in range(count):
            if gap:
                await asyncio.sleep(gap)
            began = time.perf_counter()
            await one()
            took.append(1000 * (time.perf_counter() - began))
        took.sort()
        p50, p90 = took[len(took) // 2], took[int(0.9 * (len(took) - 1))]
        apart = f"{gap * 1000:g} ms apart" if gap else "back to back"
        print(f"{which + (' raw' if raw else ''):<8} {apart:<14} {count:>6} {p50:>8.3f} {p90:>8.3f}", flush=True)
    await nc.close()
    await broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--middlewares", default="tpc,-,t,p,c", help="rows: letters of t, p, c, or - for none")
    parser.add_argument("--record", action="store_true", help="record every span (as when exporting)")
    parser.add_argument("--raw-caller", action="store_true", help="the caller asks on the raw NATS client")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between the spaced requests")
    parser.add_argument("--role", choices=("respond", "ask"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.role == "respond":
        uvloop.run(respond(args.url, args.middlewares, args.record))
        return
    if args.role == "ask":
        uvloop.run(ask(args.url, args.middlewares, args.record, args.requests, args.gap, args.raw_caller))
        return
    spans = "every span recorded" if args.record else "spans not recorded (nothing exported)"
    print(f"FastStream request/reply, two processes, {spans}; ms")
    print(f"{'mw':<8} {'requests':<14} {'count':>6} {'p50':>8} {'p90':>8}")
    with tempfile.TemporaryDirectory(prefix="fog-bench-rr-") as data_dir:
        server = NatsServer.on_free_ports(Path(data_dir))
        server.start()
        try:
            for which in args.middlewares.split(","):
                common = ["--middlewares", which, "--url", server.url] + (["--record"] if args.record else [])
                common += ["--raw-caller"] if args.raw_caller else []
                responder = subprocess.Popen(
                    [sys.executable, __file__, "--role", "respond", *common], stdout=subprocess.PIPE, text=True
                )
                try:
                    assert responder.stdout is not None
                    responder.stdout.readline()  # "ready"
                    asked = [*common, "--requests", str(args.requests), "--gap", str(args.gap)]
                    subprocess.run([sys.executable, __file__, "--role", "ask", *asked], check=True)
                finally:
                    responder.kill()
                    responder.wait()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
