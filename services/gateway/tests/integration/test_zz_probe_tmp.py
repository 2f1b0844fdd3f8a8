from __future__ import annotations

import asyncio
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from gateway_stack import Stack
import sys
sys.path.insert(0, "services/gateway/tests/integration")
from test_openapi_fuzz import published_openapi

schema = schemathesis.openapi.from_dict(published_openapi())

@schema.include(path="/v1/me").parametrize()
@settings(max_examples=5, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
async def test_probe(case: schemathesis.Case, stack: Stack) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://gateway")
    print(kwargs, id(asyncio.get_running_loop()))
    response = await stack.http.request(**kwargs)
    case.validate_response(response, checks=[checks.not_a_server_error])
