"""Property-based API testing against the live /openapi.json: whatever schemathesis sends, no 5xx,
and every answer matches the documented status codes, content types and response schemas.

Bounded (``MAX_EXAMPLES`` per operation) so it stays a test, not a fuzzing campaign. Each operation
runs as its own Hypothesis test inside one pytest test: schemathesis's lazy pytest fixture does
not work with pytest 9 (it writes ``Function._nodeid``), and this form needs nothing from it.
"""

from __future__ import annotations

import httpx
import pytest
from tests.serving.conftest import require_module

pytestmark = pytest.mark.slow

schemathesis = require_module("schemathesis")
hypothesis = require_module("hypothesis")

MAX_EXAMPLES = 20


def _checks():
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance,
            response_schema_conformance]


def test_api_conforms_and_never_fails(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    checks = _checks()
    failures, tested = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def run(case):
            case.call_and_validate(base_url=server.url, timeout=30, checks=checks)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 10, tested
    metrics = httpx.get(server.url + "/metrics").text
    sent = sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("seedlings_http_requests_total{") and "/infer" in line)
    assert sent >= MAX_EXAMPLES, "schemathesis sent (almost) nothing to the infer endpoints"
    assert not failures, "\n\n".join(failures) + "\n\nserver log:\n" + server.log()
