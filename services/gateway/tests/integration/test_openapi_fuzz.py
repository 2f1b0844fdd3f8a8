"""Schemathesis against the gateway's own OpenAPI: no 5xx, and every response as documented.

The schema is the document the gateway serves at ``/openapi.json``, read at collection time
from a gateway that is built but not started (httpx's ASGI transport runs no lifespan), so
listing the operations needs no servers; a test checks that the started gateway serves the same
document. Each operation then runs against the in-process stack of ``gateway_stack`` (a real
auth service, the session's real NATS and Postgres), through the same httpx ASGI transport as
the other tests: schemathesis generates each case and judges the response, the test sends it.

Every case goes through four checks: no server error, a documented status code, the
documented content type, a body matching the documented schema. Ops routes are included: they
are part of the published API. Two runs per operation: one sends a signed-in user's bearer
token on every case, so guarded routes are exercised beyond their 401; one sends no credential
of ours (the generator still tries empty and malformed ``Authorization`` and ``X-API-Key``).

Bounded and reproducible: 25 generated cases per operation (plus schemathesis's examples and
coverage cases), a derandomised seed and no example database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import schemathesis
from gateway_stack import Stack
from hypothesis import HealthCheck, settings
from schemathesis import checks

from fog_gateway.app import build_app as build_gateway
from fog_gateway.config import Settings as GatewaySettings

#: a hard stop per operation: the whole module takes ~20 s here, an operation under 2 s
pytestmark = pytest.mark.timeout(60)
#: one generated request (schemathesis's Case is generic in the operation type)
Case = schemathesis.Case[Any]
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
#: The gateway's rate limits, far above what the fuzzer sends: a 429 here would only mean the
#: fuzzer is fast, and would hide the responses behind it.
GENEROUS_LIMITS = {
    "rate_per_source_per_s": 10_000.0, "burst_per_source": 10_000,
    "rate_per_principal_per_s": 10_000.0, "burst_per_principal": 10_000,
}  # fmt: skip
#: The function-scoped fixtures are deliberate: one fresh stack serves all cases of one operation.
bounded = settings(
    max_examples=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip


def served_openapi() -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=build_gateway(GatewaySettings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            response = await http.get("/openapi.json")
            response.raise_for_status()
            document: dict[str, Any] = response.json()
            return document

    return asyncio.run(fetch())


DOCUMENT = served_openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture
async def gateway(stack: Stack) -> httpx.AsyncClient:
    # A service just started on a busy machine can take more than the stack's usual 2 s to answer
    # its first request; a 503 for that would be a false server error.
    return await stack.open_gateway(**GENEROUS_LIMITS, request_timeout_s=10.0)


@pytest.fixture
async def bearer(stack: Stack, gateway: httpx.AsyncClient) -> dict[str, str]:
    return stack.bearer(await stack.register_and_login("fuzz@example.org", http=gateway))


async def send(http: httpx.AsyncClient, case: Case, headers: Mapping[str, str] | None = None) -> None:
    """Send ``case`` with httpx (``case.call()`` is synchronous) and run the checks on its answer."""
    kwargs = case.as_transport_kwargs(base_url=str(http.base_url), headers=dict(headers or {}))
    # The kwargs are for requests: httpx wants cookies as a header and raw bodies as `content`.
    if cookies := kwargs.pop("cookies", None):
        kwargs["headers"]["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")
    response = await http.request(**kwargs)
    case.validate_response(response, checks=CHECKS)


async def test_the_fuzzed_document_is_the_served_one(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.get("/openapi.json")).json() == DOCUMENT


@schema.parametrize()
@bounded
async def test_calls_with_a_user_token_conform(case: Case, gateway: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    await send(gateway, case, bearer)


@schema.parametrize()
@bounded
async def test_calls_without_credentials_conform(case: Case, gateway: httpx.AsyncClient) -> None:
    await send(gateway, case)
