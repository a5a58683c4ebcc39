"""Schemathesis against the API's own OpenAPI document: generated requests, valid and invalid, to every
operation, a bounded number per operation and mode. No response may be a 5xx, and every documented response must
conform to its schema.

Schemathesis's pytest plugin does not run under this pytest, so the operations are walked here, each
with Hypothesis directly; every failure is collected and reported at the end.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

EXAMPLES = 12  # per operation: a few hundred requests in all, about a minute
SKIP = ("/metrics",)  # Prometheus text, not part of the JSON API


@pytest.mark.slow
def test_no_5xx_and_responses_conform(stack):
    doc = httpx.get(stack.api_url + "/openapi.json", timeout=30).json()
    doc["paths"] = {p: ops for p, ops in doc["paths"].items() if p not in SKIP}
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"Bearer {stack.keys['tenant-a']}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:
        for mode in GenerationMode:  # requests the schema allows, and requests it does not
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                case.call_and_validate(base_url=stack.api_url, headers=headers, timeout=60,
                                       checks=[not_a_server_error, response_schema_conformance])

            try:
                run()
            except Unsatisfiable:
                pass  # nothing in the schema to violate (no parameters or body)
            except Exception as e:  # keep going: report every operation that fails
                failures.append(f"{operation.label} ({mode.value}): {str(e)[:1500]}")
    assert not failures, "\n\n".join(failures)
