"""Reading usage: GET /v1/customers/{id}/usage and GET /v1/usage/summary."""

from datetime import UTC, datetime

import pytest
import time_machine

from accounts.models import Scope
from meters.models import Aggregation
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.conftest import api_client
from tests.meters.conftest import JANUARY, at, record

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(project):
    return api_client(project, [Scope.BILLING_READ])


@pytest.fixture
def metered(project, customer):
    calls = MeterFactory(
        project=project, code="api_calls", name="API calls", unit="calls", group_by=["region"]
    )
    seats = MeterFactory(project=project, code="seats", name="Seats", aggregation=Aggregation.MAX)
    plan = make_plan(
        project, charges=[{"meter": calls, "unit_price": "0.01"}, {"meter": seats, "unit_price": "5"}]
    )
    subscription = subscribe(customer, plan, starts_at=JANUARY)
    web_eu, web_us = {"region": "eu", "project": "web"}, {"region": "us", "project": "web"}
    record(
        project,
        {"meter": "api_calls", "value": 100, "timestamp": at(2, 10), "properties": web_eu},
        {"meter": "api_calls", "value": 40, "timestamp": at(2, 11), "properties": web_us},
        {"meter": "api_calls", "value": 2, "timestamp": at(3, 9), "properties": {"project": "api"}},
        {"meter": "seats", "value": 3, "timestamp": at(2)},
        {"meter": "seats", "value": 5, "timestamp": at(4)},
        customer="cus_8fq",
    )
    return subscription, calls, seats


def test_current_usage_per_subscription_and_meter(customer, metered, reader):
    subscription, calls, seats = metered

    response = reader.get(f"/v1/customers/{customer.public_id}/usage")

    assert response.status_code == 200
    assert response.json() == {
        "customer": customer.public_id,
        "as_of": "2026-01-15T12:00:00Z",
        "subscriptions": [
            {
                "subscription": subscription.public_id,
                "plan": subscription.plan.public_id,
                "status": "active",
                "period": {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"},
                "meters": [
                    {
                        "meter": "api_calls",
                        "meter_id": calls.public_id,
                        "name": "API calls",
                        "unit": "calls",
                        "aggregation": "sum",
                        "quantity": "142",
                        "breakdown": [
                            {"dimensions": {"region": "eu"}, "quantity": "100"},
                            {"dimensions": {"region": "us"}, "quantity": "40"},
                            {"dimensions": {"region": None}, "quantity": "2"},
                        ],
                    },
                    {
                        "meter": "seats",
                        "meter_id": seats.public_id,
                        "name": "Seats",
                        "unit": "",
                        "aggregation": "max",
                        "quantity": "5",
                        "breakdown": [],
                    },
                ],
            }
        ],
    }


def test_after_the_period_ends_the_next_one_is_current(customer, metered, reader):
    # The period close has not moved the subscription on yet (grace period): February still shows.
    with time_machine.travel(datetime(2026, 2, 1, 0, 30, tzinfo=UTC), tick=False):
        body = reader.get(f"/v1/customers/{customer.public_id}/usage").json()

    [current] = body["subscriptions"]
    assert current["period"] == {"start": "2026-02-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}
    assert [meter["quantity"] for meter in current["meters"]] == ["0", "0"]


def test_a_customer_without_subscriptions_has_no_usage(project, reader):
    customer = CustomerFactory(project=project)

    assert reader.get(f"/v1/customers/{customer.public_id}/usage").json()["subscriptions"] == []


def test_reading_usage_needs_billing_read(project, customer, metered):
    writer = api_client(project, [Scope.USAGE_WRITE])

    assert writer.get(f"/v1/customers/{customer.public_id}/usage").status_code == 403
    assert writer.get("/v1/usage/summary?from=2026-01-01&to=2026-01-02").status_code == 403


# --- summary ---------------------------------------------------------------------------------------


def test_summary_by_property_and_day(metered, reader):
    response = reader.get(
        "/v1/usage/summary",
        {"from": "2026-01-01", "to": "2026-01-05", "group_by": "project,meter", "meter": "api_calls"},
    )

    assert response.status_code == 200
    assert response.json() == {
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-05T00:00:00Z",
        "granularity": "day",
        "group_by": ["project", "meter"],
        "results": [
            {
                "meter": "api_calls",
                "dimensions": {"project": "api"},
                "quantity": "2",
                "buckets": [{"start": "2026-01-03T00:00:00Z", "quantity": "2"}],
            },
            {
                "meter": "api_calls",
                "dimensions": {"project": "web"},
                "quantity": "140",
                "buckets": [{"start": "2026-01-02T00:00:00Z", "quantity": "140"}],
            },
        ],
    }


def test_summary_by_customer_and_hour_for_every_meter(project, customer, metered, reader):
    other = CustomerFactory(project=project, external_id="other")
    subscribe(other, metered[0].plan, starts_at=JANUARY)
    record(project, {"meter": "api_calls", "value": 1, "timestamp": at(2, 10, 30)}, customer="other")

    body = reader.get(
        "/v1/usage/summary",
        {
            "from": "2026-01-02T10:00:00Z",
            "to": "2026-01-02T12:00:00Z",
            "group_by": "customer",
            "granularity": "hour",
        },
    ).json()

    assert [(r["meter"], r["dimensions"], r["quantity"], r["buckets"]) for r in body["results"]] == [
        (
            "api_calls",
            {"customer": customer.public_id},
            "140",
            [
                {"start": "2026-01-02T10:00:00Z", "quantity": "100"},
                {"start": "2026-01-02T11:00:00Z", "quantity": "40"},
            ],
        ),
        (
            "api_calls",
            {"customer": other.public_id},
            "1",
            [{"start": "2026-01-02T10:00:00Z", "quantity": "1"}],
        ),
    ]


def test_summary_for_one_customer_by_external_id(project, customer, metered, reader):
    body = reader.get(
        "/v1/usage/summary",
        {"from": "2026-01-01", "to": "2026-01-31", "customer": "cus_8fq", "meter": "seats"},
    ).json()

    assert [(r["meter"], r["quantity"]) for r in body["results"]] == [("seats", "5")]


@pytest.mark.parametrize(
    ("query", "status", "code", "param"),
    [
        ({"to": "2026-01-02"}, 400, "required", "from"),
        ({"from": "2026-01-02", "to": "2026-01-01"}, 422, "invalid_window", "to"),
        ({"from": "someday", "to": "2026-01-01"}, 400, "invalid_datetime", "from"),
        ({"from": "1999-12-31T23:00:00Z", "to": "2026-01-01"}, 422, "date_out_of_range", "from"),
        ({"from": "2026-01-01T00:00:00+16:00", "to": "2026-01-02"}, 200, None, None),
        (
            {"from": "2025-01-01", "to": "2026-06-01", "granularity": "hour"},
            422,
            "too_many_buckets",
            "granularity",
        ),
        (
            {"from": "2026-01-01", "to": "2026-01-02", "granularity": "week"},
            400,
            "invalid_choice",
            "granularity",
        ),
        (
            {"from": "2026-01-01", "to": "2026-01-02", "meter": "api_calls,nope"},
            422,
            "unknown_meter",
            "meter",
        ),
        (
            {"from": "2026-01-01", "to": "2026-01-02", "customer": "cus_nope"},
            422,
            "unknown_customer",
            "customer",
        ),
        (
            {"from": "2026-01-01", "to": "2026-01-02", "group_by": "a,b,c,d,e,f"},
            422,
            "invalid_group_by",
            "group_by",
        ),
    ],
)
def test_summary_parameters_are_validated(metered, reader, query, status, code, param):
    response = reader.get("/v1/usage/summary", query)

    assert response.status_code == status
    if code is not None:
        assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, param)


def test_both_endpoints_document_their_parameters(client):
    paths = client.get("/v1/openapi.json").json()["paths"]

    summary = {p["name"]: p.get("required", False) for p in paths["/v1/usage/summary"]["get"]["parameters"]}
    assert summary == {
        "from": True, "to": True, "customer": False, "meter": False, "group_by": False, "granularity": False,
    }  # fmt: skip
    assert [p["name"] for p in paths["/v1/customers/{id}/usage"]["get"]["parameters"]] == ["id"]
    assert "oneOf" in paths["/v1/usage"]["post"]["requestBody"]["content"]["application/json"]["schema"]
