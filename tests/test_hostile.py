"""Hostile input against the HTTP app: schemathesis generates valid and invalid bodies from the
OpenAPI schema (bounded examples) and checks that none gets a 5xx, that every answer conforms to the
documented status codes and error body, and that the schema itself is valid."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from rerank_plugins.serving.app import RerankService, create_app  # noqa: E402
from rerank_plugins.serving.settings import ServeSettings  # noqa: E402
from tests.conftest import OverlapScorer  # noqa: E402

pytestmark = pytest.mark.hostile

_SERVICE = RerankService(
    scorer=OverlapScorer(),
    raw_scorer=OverlapScorer(),
    settings=ServeSettings(max_documents=50, max_request_bytes=200_000, max_query_chars=2_000),
)
# a request over a size limit (documents, query length, body bytes) is refused with 413, as TEI does
_CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "413", "422"]}}}
)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_SERVICE), config=_CONFIG)


@schema.parametrize()
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_get_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, response.text
    if response.status_code == 405:  # a method the route does not serve (schemathesis probes those too)
        assert case.method.lower() != case.operation.method.lower()
        return
    documented = case.operation.definition.raw.get("responses", {})
    assert str(response.status_code) in documented, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "error_type", "message"}
        assert body["message"]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_responses_pass_schemathesis_checks(case: schemathesis.Case) -> None:
    case.call_and_validate()
