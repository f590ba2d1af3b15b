"""The usage requests of the five billing services Billable copies (/work/shared/seeds), sent as
their pages write them, byte for byte, to the path and with the header their pages use: each is
stored and matched exactly as a client of that service expects. (The fifth page reports no usage.)

The catalog each needs is set up with the codes and references the request names: these are the
objects a client of that service would have created first."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.models import Scope
from catalog.models import Customer
from meters.models import Aggregation, UsageEvent
from tests.accounts.factories import make_api_key
from tests.catalog.factories import CustomerFactory, MeterFactory, ProductFactory, make_plan, subscribe
from tests.conftest import api_client
from tests.meters.conftest import JANUARY, NOW, stored

pytestmark = pytest.mark.django_db


def _stored(project) -> list[tuple]:
    return [
        (e.timestamp, e.customer_external_id, e.customer, e.subscription, e.meter, e.meter_code, e.value,
         e.unmatched_reason)
        for e in stored(project)
    ]  # fmt: skip


def _accepted(response, count: int = 1) -> list[str]:
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["unmatched"], body["rejected"]) == (count, 0, 0, 0)
    return [result["id"] for result in body["results"]]


# --- 000 JEB: "POST /v1/usage { "customer": "cus_8fq", "units": 1240 }" -----------------------------

JEB = b'{ "customer": "cus_8fq", "units": 1240 }'


def test_jeb(project, customer, meter, subscription, ingest):
    response = ingest.client.post("/v1/usage", JEB, content_type="application/json")

    [event_id] = _accepted(response)
    # No meter named: the customer's subscriptions price one. No timestamp: when received.
    assert _stored(project) == [
        (NOW, "cus_8fq", customer, subscription, meter, "api_calls", Decimal(1240), ""),
    ]
    assert stored(project)[0].public_id == event_id


# --- 001 JustPaid: the page gives no body, only its parameters --------------------------------------
# "Customer ID (provided by the system), Event Name, Event Value (quantity of usage), Timestamp
# (ISO 8601 format, converted to UTC), Idempotency Key: use a unique UUID", with the example of an
# OCR company: event name `invoices`, 50 invoices, at 2024-07-15T11:30:00Z. In our names: the ID the
# create-customer call returned as `customer_id`, `event_name`, `value`, `timestamp`,
# `idempotency_key`.


def test_justpaid(project):
    client = api_client(project)
    ocr = MeterFactory(project=project, code="invoices", name="Invoices processed")
    created = client.post("/v1/customers", {"name": "Initech", "email": "ap@initech.example"}, format="json")
    customer_id = created.json()["id"]
    subscription = subscribe(
        Customer.objects.get(project=project, public_id=customer_id),
        make_plan(project, charges=[{"meter": ocr, "unit_price": "0.10"}]),
        starts_at=datetime(2024, 7, 1, tzinfo=UTC),
    )
    key = str(uuid.uuid4())
    body = {
        "customer_id": customer_id,
        "event_name": "invoices",
        "value": 50,
        "timestamp": "2024-07-15T11:30:00Z",
        "idempotency_key": key,
    }

    [event_id] = _accepted(client.post("/v1/usage", body, format="json"))
    retried = client.post("/v1/usage", body, format="json")

    assert retried.json()["results"] == [{"index": 0, "status": "duplicate", "id": event_id}]
    assert _stored(project) == [
        (datetime(2024, 7, 15, 11, 30, tzinfo=UTC), customer_id, subscription.customer, subscription, ocr,
         "invoices", Decimal(50), ""),
    ]  # fmt: skip
    assert stored(project)[0].idempotency_key == key


# --- 002 UsageBox: its quick start and its usage guide -----------------------------------------------

USAGEBOX_QUICK_START = b"""[{
"subscription": "sub.your-subscription",
"product_item": "item.your-product-item",
"meter": "meter.api-requests",
"value": 42
}]"""

USAGEBOX_GUIDE = b"""{
"events": [
{
"subscription_id": "sub_123",
"meter_id": "mtr_compute",
"quantity": 150,
"occurred_at": "2024-05-01T12:00:00Z"
}
]
}"""


def test_usagebox_quick_start(project):
    requests = MeterFactory(project=project, code="meter.api-requests", name="API requests")
    product = ProductFactory(project=project, code="item.your-product-item")
    customer = CustomerFactory(project=project, external_id="acme")
    subscription = subscribe(
        customer,
        make_plan(project, product=product, charges=[{"meter": requests, "unit_price": "0.001"}]),
        starts_at=JANUARY,
        external_reference="sub.your-subscription",
    )
    _, key = make_api_key(project, [Scope.USAGE_WRITE])

    # curl -X POST https://api.usagebox.com/api/v1/usage -H 'x-api-key: YOUR_API_KEY' …
    response = APIClient().post(
        "/api/v1/usage", USAGEBOX_QUICK_START, content_type="application/json", HTTP_X_API_KEY=key
    )

    _accepted(response)
    # The subscription names the customer; the product checks the meter is one its plans price.
    assert _stored(project) == [
        (NOW, "acme", customer, subscription, requests, "meter.api-requests", Decimal(42), ""),
    ]


def test_usagebox_guide(project):
    compute = MeterFactory(project=project, code="mtr_compute", name="Compute")
    customer = CustomerFactory(project=project, external_id="cust_456")
    # Their subscription example: starts 2024-05-01; `sub_123` is its reference in the client's
    # system (our IDs are generated: sub_ and 22 characters).
    subscription = subscribe(
        customer,
        make_plan(project, code="plan_usage_plus", charges=[{"meter": compute, "unit_price": "0.05"}]),
        starts_at=datetime(2024, 5, 1, tzinfo=UTC),
        external_reference="sub_123",
    )

    # curl -X POST https://api.usagebox.com/v1/usage -H 'Authorization: Bearer <api_key>' …
    response = api_client(project, [Scope.USAGE_WRITE]).post(
        "/v1/usage", USAGEBOX_GUIDE, content_type="application/json"
    )

    _accepted(response)
    assert _stored(project) == [
        (datetime(2024, 5, 1, 12, tzinfo=UTC), "cust_456", customer, subscription, compute, "mtr_compute",
         Decimal(150), ""),
    ]  # fmt: skip


# --- 003 Revnu: "Request Body" -----------------------------------------------------------------------

REVNU = b"""{
  "productId": "k57abc123...",
  "stripeCustomerId": "cus_xxxxx",
  "value": 150
}"""


def test_revnu(project):
    # "Values must be whole numbers"; the success answer names the event `api_calls`.
    calls = MeterFactory(
        project=project, code="api_calls", whole_numbers_only=True, aggregation=Aggregation.SUM
    )
    product = ProductFactory(project=project, code="k57abc123...")
    customer = CustomerFactory(project=project, external_id="buyer-1", processor_customer_id="cus_xxxxx")
    subscription = subscribe(
        customer,
        make_plan(project, product=product, base_fee="9", charges=[{"meter": calls, "unit_price": "0.01"}]),
        starts_at=JANUARY,
    )

    # POST /api/v1/usage, Authorization: Bearer …
    response = api_client(project, [Scope.USAGE_WRITE]).post(
        "/api/v1/usage", REVNU, content_type="application/json"
    )

    _accepted(response)
    assert _stored(project) == [
        (NOW, "cus_xxxxx", customer, subscription, calls, "api_calls", Decimal(150), ""),
    ]
    assert UsageEvent.objects.get().properties == {}
