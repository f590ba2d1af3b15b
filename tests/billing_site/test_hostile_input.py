"""Every write operation of the API, with each field of a valid request replaced by hostile values:
the answer is a 4xx in the envelope, and nothing is stored (no row of any kind, audit and outbox
included).

The operations come from the OpenAPI document itself, so a new write operation without a valid
request here fails `test_every_write_operation_is_walked`.
"""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.utils import timezone

from billing_site.models import RateLimitCounter
from invoicing.credits import credits_grant
from invoicing.models import InvoiceStatus
from invoicing.services import credit_note_create, invoice_submit_for_review
from meters.ingestion import ALIASED_FIELDS
from payments.services import payment_record
from tests.catalog.factories import (
    CouponFactory,
    CustomerFactory,
    MeterFactory,
    ProductFactory,
    TaxRateFactory,
    make_plan,
    subscribe,
)
from tests.invoicing.factories import issued_invoice
from tests.payments.conftest import localstripe_url, stripe_card, stripe_project  # noqa: F401 - fixtures
from tests.webhooks.factories import make_endpoint, record_event

pytestmark = pytest.mark.django_db

# Values no field takes. Written into the JSON text as is: NaN and 10^400 are not JSON an encoder
# would write.
RAW = object()
HOSTILE = {
    "nul": "a\u0000b",
    "lone surrogate": "\ud800",
    "10^400": (RAW, "1" + "0" * 400),
    "NaN": (RAW, "NaN"),
    "deep nesting": (RAW, "[" * 5000 + "]" * 5000),
    "1 MB string": "x" * 1_000_000,
}
# Values no date-time field takes (text fields do: they are strings like any other).
FAR_DATES = {"far future": "9999-12-31T23:00:00Z", "before year 1 in UTC": "0001-01-01T00:00:00+01:00"}
MODULES = (
    "accounts",
    "billing_site",
    "catalog",
    "subscriptions",
    "meters",
    "invoicing",
    "payments",
    "webhooks",
)


@pytest.fixture
def project(stripe_project):  # noqa: F811 - the fixture imported above
    """The project collects through (local)Stripe: saving a payment method asks Stripe."""
    return stripe_project


@pytest.fixture
def world(project):
    project.api_rate_limit_per_minute = project.ingest_rate_limit_per_minute = 10**7
    project.save()
    meter = MeterFactory(project=project, code="api_calls")
    product = ProductFactory(project=project, code="api")
    plan = make_plan(
        project, code="starter", product=product, charges=[{"meter": meter, "unit_price": "0.01"}]
    )
    customer = CustomerFactory(project=project, external_id="cus_8fq")
    subscription = subscribe(customer, plan, starts_at=datetime(2026, 1, 1, tzinfo=UTC))
    open_invoice = issued_invoice(project)
    review = issued_invoice(project)
    review.status = InvoiceStatus.DRAFT
    review.save()
    invoice_submit_for_review(invoice=review, actor=None)
    endpoint = make_endpoint(project)
    event = record_event(project)
    paid = issued_invoice(project)
    payment_record(invoice=paid, amount=paid.total, actor=None)
    refundable = credit_note_create(invoice=paid, actor=None, reason="duplicate", amount=Decimal("1.00"))
    grant = credits_grant(customer=customer, currency="USD", amount=Decimal("10.00"), actor=None)
    tax_rate = TaxRateFactory(project=project)
    coupon = CouponFactory(project=project, code="launch20")
    return {
        "tax_rate": tax_rate.public_id,
        "coupon": coupon.public_id,
        "charge": plan.charges.get().public_id,
        "meter": meter.public_id,
        "product": product.public_id,
        "plan": plan.public_id,
        "customer": customer.public_id,
        "subscription": subscription.public_id,
        "invoice": open_invoice.public_id,
        "review": review.public_id,
        "line": open_invoice.lines.get().public_id,
        "endpoint": endpoint.public_id,
        "event": event.public_id,
        "api_key": project.api_keys.first().public_id,
        "yesterday": (timezone.now() - timedelta(days=1)).isoformat(),
        "refundable": refundable.public_id,
        "grant": grant.public_id,
        "new_card": lambda: stripe_card(project).id,
    }


def _charge(w):
    return {
        "meter": w["meter"],
        "pricing_model": "graduated",
        "tiers": [{"up_to": 10, "unit_price": "1"}, {"up_to": None}],
    }


# "METHOD path as the schema writes it" → (path, valid body) from the seeded objects.
VALID = {
    "POST /v1/api-keys": lambda w: ("/v1/api-keys", {"name": "k", "scopes": ["billing:read"]}),
    "POST /v1/api-keys/{id}/roll": lambda w: (f"/v1/api-keys/{w['api_key']}/roll", {"expires_in": 3600}),
    "PATCH /v1/project": lambda w: (
        "/v1/project",
        {"name": "N", "currency": "EUR", "timezone": "Europe/Paris", "invoice_delivery": "review",
         "grace_period_hours": 2, "payment_terms_days": 14, "invoice_number_prefix": "N", "unmatched_usage": "reject",
         "require_usage_idempotency_key": True, "sender_name": "N", "sender_email": "billing@n.example",
         "reply_to_email": "help@n.example", "accent_color": "#112233", "footer_text": "f"},
    ),
    "POST /v1/customers": lambda w: (
        "/v1/customers",
        {"external_id": "new", "name": "N", "email": "n@example.com", "currency": "USD", "timezone": "UTC",
         "billing_address": {"line1": "1 Main St", "country": "US"}, "metadata": {"crm": "1"}, "tax_id": "T",
         "invoice_delivery": "auto", "processor_customer_id": "cus_x", "tax_status": "exempt",
         "tax_rates": [w["tax_rate"]]},
    ),
    "PATCH /v1/customers/{id}": lambda w: (
        f"/v1/customers/{w['customer']}",
        {"name": "N", "metadata": {"a": "b"}, "tax_status": "reverse_charge", "tax_rates": [w["tax_rate"]]},
    ),
    "POST /v1/customers/{id}/coupons": lambda w: (
        f"/v1/customers/{w['customer']}/coupons", {"coupon": "launch20", "subscription": w["subscription"]},
    ),
    "POST /v1/tax-rates": lambda w: (
        "/v1/tax-rates", {"name": "VAT", "percentage": "19.5", "inclusive": True, "jurisdiction": "DE", "is_default": True},
    ),
    "PATCH /v1/tax-rates/{id}": lambda w: (
        f"/v1/tax-rates/{w['tax_rate']}", {"name": "TVA", "jurisdiction": "FR", "is_default": False},
    ),
    "POST /v1/coupons": lambda w: (
        "/v1/coupons",
        {"code": "new", "name": "N", "kind": "fixed_amount", "amount_off": {"USD": "10.00"}, "duration": "repeating",
         "duration_periods": 3, "plans": [w["plan"]], "charges": [w["charge"]], "max_redemptions": 5,
         "redeem_by": "2099-01-01T00:00:00Z"},
    ),
    "PATCH /v1/coupons/{id}": lambda w: (
        f"/v1/coupons/{w['coupon']}", {"name": "N", "max_redemptions": 10, "redeem_by": "2099-01-01T00:00:00Z"},
    ),
    "POST /v1/customers/{id}/payment-methods": lambda w: (
        f"/v1/customers/{w['customer']}/payment-methods", {"payment_method_id": w["new_card"]()},
    ),
    "POST /v1/customers/{id}/credits": lambda w: (
        f"/v1/customers/{w['customer']}/credits",
        {"type": "purchase", "currency": "USD", "amount": 10000, "price": 9000, "name": "n", "priority": 10,
         "expires_at": "2099-01-01T00:00:00Z"},
    ),
    "PATCH /v1/customers/{id}/credits/{currency}": lambda w: (
        f"/v1/customers/{w['customer']}/credits/USD", {"low_balance_threshold": 1000},
    ),
    "POST /v1/invoices/{id}/adjustments": lambda w: (
        f"/v1/invoices/{w['review']}/adjustments", {"amount": 100, "description": "d", "reason": "r"},
    ),
    "POST /v1/invoices/{id}/credit-notes": lambda w: (
        f"/v1/invoices/{w['invoice']}/credit-notes",
        {"reason": "duplicate", "memo": "m", "lines": [{"line": w["line"], "amount": 1}]},
    ),
    "POST /v1/invoices/{id}/payments": lambda w: (
        f"/v1/invoices/{w['invoice']}/payments",
        {"amount": 100, "reference": "BANK-1", "paid_at": w["yesterday"], "method": "bank_transfer"},
    ),
    "POST /v1/credit-notes/{id}/refund": lambda w: (
        f"/v1/credit-notes/{w['refundable']}/refund", {"reference": "BANK-REFUND-1"},
    ),
    "POST /v1/invoices/{id}/reject": lambda w: (f"/v1/invoices/{w['review']}/reject", {"reason": "r"}),
    "POST /v1/invoices/{id}/void": lambda w: (f"/v1/invoices/{w['invoice']}/void", {"reason": "r"}),
    "POST /v1/invoices/preview": lambda w: (
        "/v1/invoices/preview", {"subscription": w["subscription"], "plan": w["plan"], "period_start": "2026-01-05T00:00:00Z"},
    ),
    "POST /v1/meters": lambda w: (
        "/v1/meters",
        {"code": "new", "name": "N", "unit": "u", "aggregation": "sum", "property": "p",
         "filters": [{"property": "region", "operator": "in", "values": ["eu"]}], "group_by": ["region"]},
    ),
    "PATCH /v1/meters/{id}": lambda w: (f"/v1/meters/{w['meter']}", {"name": "N", "group_by": ["a"]}),
    "POST /v1/plans": lambda w: (
        "/v1/plans",
        {"product": w["product"], "code": "new", "name": "N", "currency": "USD", "interval": "month",
         "interval_count": 1, "trial_days": 0, "base_fee": "10", "entitlements": {"sso": True},
         "charges": [_charge(w)], "description": "d"},
    ),
    "PATCH /v1/plans/{id}": lambda w: (f"/v1/plans/{w['plan']}", {"name": "N", "base_fee": "5"}),
    "POST /v1/products": lambda w: ("/v1/products", {"code": "new", "name": "N", "description": "d"}),
    "PATCH /v1/products/{id}": lambda w: (f"/v1/products/{w['product']}", {"name": "N"}),
    "POST /v1/subscriptions": lambda w: (
        "/v1/subscriptions",
        {"customer": w["customer"], "plan": w["plan"], "starts_at": "2026-02-01T00:00:00Z", "trial_days": 0,
         "billing_anchor": "calendar", "external_reference": "r", "payment_terms_days": 30, "metadata": {"a": "b"}},
    ),
    "PATCH /v1/subscriptions/{id}": lambda w: (
        f"/v1/subscriptions/{w['subscription']}", {"external_reference": "r", "metadata": {"a": "b"}},
    ),
    "POST /v1/usage": lambda w: (
        "/v1/usage",
        {"customer": "cus_8fq", "meter": "api_calls", "value": 5, "timestamp": "2026-01-10T00:00:00Z",
         "properties": {"region": "eu"}, "idempotency_key": "k1"},
    ),
    "POST /v1/webhook-endpoints": lambda w: (
        "/v1/webhook-endpoints", {"url": "https://93.184.215.14/h", "description": "d", "event_types": ["invoice.*"]},
    ),
    "PATCH /v1/webhook-endpoints/{id}": lambda w: (f"/v1/webhook-endpoints/{w['endpoint']}", {"description": "d"}),
    "POST /v1/webhook-endpoints/{id}/redeliver": lambda w: (
        f"/v1/webhook-endpoints/{w['endpoint']}/redeliver", {"event": w["event"]},
    ),
    "POST /v1/webhook-endpoints/{id}/recover": lambda w: (
        f"/v1/webhook-endpoints/{w['endpoint']}/recover", {"since": w["yesterday"]},
    ),
}  # fmt: skip
# Operations without a body: the only input is the ID in the path.
NO_BODY = {
    "DELETE /v1/api-keys/{id}", "DELETE /v1/customers/{id}", "POST /v1/invoices/{id}/approve",
    "POST /v1/customers/{id}/payment-methods/setup-intent", "POST /v1/customers/{id}/payment-methods/{payment_method}/default",
    "DELETE /v1/customers/{id}/payment-methods/{payment_method}",
    "DELETE /v1/customers/{id}/coupons/{redemption}", "POST /v1/tax-rates/{id}/archive", "POST /v1/coupons/{id}/archive",
    "POST /v1/invoices/{id}/send", "POST /v1/invoices/{id}/mark-uncollectible",
    "DELETE /v1/meters/{id}", "POST /v1/meters/{id}/archive", "DELETE /v1/plans/{id}",
    "POST /v1/plans/{id}/archive", "DELETE /v1/products/{id}", "POST /v1/products/{id}/archive",
    "DELETE /v1/webhook-endpoints/{id}", "POST /v1/webhook-endpoints/{id}/rotate-secret",
    "POST /v1/credit-grants/{id}/void",
}  # fmt: skip
HOSTILE_IDS = ["%00", "%ED%A0%80", "x" * 5000]


def _snapshot() -> dict[str, int]:
    return {
        model._meta.label: model.objects.count()
        for model in apps.get_models()
        if model._meta.app_label in MODULES and model is not RateLimitCounter and not model._meta.proxy
    }


def _encode(value) -> str:
    if isinstance(value, tuple) and value[0] is RAW:
        return value[1]
    return json.dumps(value)  # ASCII: a lone surrogate travels as \ud800, as a client would send it


# A usage event's field and its aliases: a hostile value under an alias replaces the field of the
# valid event (beside it, the event would be refused for naming the field twice, before its value
# is read).
_ALIASES = {name: set(names) - {name} for names in ALIASED_FIELDS for name in names}


def _body(valid: dict, field: str, value) -> bytes:
    parts = [
        f"{json.dumps(name)}: {_encode(value if name == field else item)}"
        for name, item in valid.items()
        if name not in _ALIASES.get(field, ())
    ]
    if field not in valid:
        parts.append(f"{json.dumps(field)}: {_encode(value)}")
    return ("{" + ", ".join(parts) + "}").encode()


def _write_operations(client) -> set[str]:
    paths = client.get("/v1/openapi.json").json()["paths"]
    return {
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method in operations
        if method in {"post", "patch", "put", "delete"}
    }


def _request_fields(client, operation: str) -> dict[str, bool]:
    """The top-level fields of the operation's request body, as the schema lists them, and
    whether each is a date-time."""
    method, path = operation.split(" ", 1)
    document = client.get("/v1/openapi.json").json()
    body = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    schemas = [body, *body.get("oneOf", [])]
    fields = {}
    for schema in schemas:
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        for name, field in schema.get("properties", {}).items():
            fields[name] = {"format": "date-time"} in field.get("anyOf", [])
    fields.pop("events", None)
    return fields


def test_every_write_operation_is_walked(client):
    assert _write_operations(client) == set(VALID) | NO_BODY


@pytest.mark.parametrize("operation", sorted(VALID))
def test_the_valid_request_is_valid(api, world, operation):
    """The baseline the hostile requests vary: accepted as it stands."""
    method, _ = operation.split(" ", 1)
    path, body = VALID[operation](world)

    response = getattr(api, method.lower())(path, body, format="json")

    assert response.status_code < 300, response.content[:300]


@pytest.mark.parametrize("operation", sorted(VALID))
def test_hostile_values_in_any_field_are_4xx_and_store_nothing(api, world, client, operation):
    method, _ = operation.split(" ", 1)
    path, valid = VALID[operation](world)
    send = getattr(api, method.lower())
    failures = []
    for field, is_moment in _request_fields(client, operation).items():
        for name, value in (HOSTILE | FAR_DATES if is_moment else HOSTILE).items():
            before = _snapshot()
            response = send(path, _body(valid, field, value), content_type="application/json")
            body = response.json()
            if not 400 <= response.status_code < 500 or "error" not in body or _snapshot() != before:
                failures.append((field, name, response.status_code, response.content[:200]))
    assert failures == []


@pytest.mark.parametrize("operation", sorted(op for op in NO_BODY | set(VALID) if "{id}" in op))
@pytest.mark.parametrize("hostile_id", HOSTILE_IDS)
def test_hostile_ids_in_the_path_are_4xx_and_store_nothing(api, world, operation, hostile_id):
    method, path = operation.split(" ", 1)
    before = _snapshot()

    response = getattr(api, method.lower())(path.replace("{id}", hostile_id), {}, format="json")

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert _snapshot() == before
