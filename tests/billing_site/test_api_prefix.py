"""The API under /api/v1/ as well as /v1/: the prefix some billing APIs' clients are written against
(UsageBox's and Revnu's pages send to /api/v1/usage)."""

import gzip
import json

import pytest

from catalog.models import Customer
from meters.models import UsageEvent
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def test_every_route_answers_under_api_v1(api, project):
    created = api.post("/api/v1/customers", {"external_id": "acme", "name": "Acme"}, format="json")

    assert created.status_code == 201
    customer = Customer.objects.get(project=project)
    assert api.get(f"/api/v1/customers/{customer.public_id}").json()["external_id"] == "acme"
    assert api.get("/api/v1/customers").json()["results"][0]["id"] == customer.public_id


def test_the_gateway_runs_for_api_v1_too(api, project):
    body = gzip.compress(json.dumps({"customer": "acme", "meter": "calls", "value": 3}).encode())

    response = api.post(
        "/api/v1/usage",
        body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
        HTTP_IDEMPOTENCY_KEY="retry-1",
    )
    replayed = api.post(
        "/api/v1/usage", body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip",
        HTTP_IDEMPOTENCY_KEY="retry-1",
    )  # fmt: skip

    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == str(project.ingest_rate_limit_per_minute)
    assert replayed["Idempotent-Replayed"] == "true"
    assert UsageEvent.objects.count() == 1


def test_errors_and_unknown_routes_keep_the_envelope(project):
    anonymous = api_client(project)
    anonymous.credentials()

    assert anonymous.get("/api/v1/customers").json()["error"]["code"] == "missing_api_key"
    missing = api_client(project).get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "No route for GET /api/v1/nothing-here."
    assert api_client(project).get("/api/v2/customers").status_code == 404


def test_the_schema_lists_the_v1_paths_only(client):
    paths = client.get("/v1/openapi.json").json()["paths"]

    assert "/v1/usage" in paths
    assert [path for path in paths if path.startswith("/api/")] == []
