"""JEB's page, end to end: "Report usage, listen for events, and get paid."

POST /v1/usage {"customer": "cus_8fq", "units": 1240} → the period closes → the invoice is finalized
→ charged through Stripe (localstripe) → a real local receiver gets `invoice.paid`
{"invoice", "usage": 1240, "status": "paid"} with a valid signature → GET /v1/balance shows it
pending, available 48 hours later ({"available": 6200, "payout": "48h"}), then paid out.
"""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from invoicing.billing import billing_close
from invoicing.models import Invoice, InvoiceStatus
from payments import stripe_processor
from payments.models import Payout, PayoutStatus
from payments.payouts import balance_settle
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.conftest import api_client
from tests.payments.conftest import saved_card, stripe_webhook
from tests.webhooks.factories import make_endpoint

pytestmark = pytest.mark.django_db

# Near the real clock: localstripe dates a charge's available-on by it.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - timedelta(days=40)


def test_usage_is_invoiced_charged_announced_and_paid_out_in_48_hours(
    stripe_project, receiver, django_capture_on_commit_callbacks
):
    project = stripe_project
    project.currency, project.allow_private_webhook_urls = "EUR", True  # localstripe pays out in EUR
    project.save()
    api = api_client(project)
    meter = MeterFactory(project=project, code="api_calls", name="API calls")
    customer = CustomerFactory(project=project, external_id="cus_8fq", currency="EUR")
    subscription = subscribe(customer, make_plan(project, charges=[{"meter": meter, "unit_price": "0.05"}]),
                             starts_at=START)  # fmt: skip
    saved_card(customer)
    endpoint = make_endpoint(project, url=receiver.url, event_types=["invoice.paid"])
    receiver.secret = endpoint.secret

    with time_machine.travel(START + timedelta(days=5), tick=False):
        reported = api.post("/v1/usage", {"customer": "cus_8fq", "units": 1240}, format="json")
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=True):
        billing_close(as_of=NOW)
    with time_machine.travel(NOW, tick=False):
        pending = api.get("/v1/balance").json()
    with time_machine.travel(NOW + timedelta(hours=48), tick=False):
        available = api.get("/v1/balance").json()
        with django_capture_on_commit_callbacks(execute=True):
            settled = balance_settle(now=NOW + timedelta(hours=48))
        paid_out = api.get("/v1/balance").json()
        [payout] = settled.payouts
        at_stripe = stripe_processor.plain(stripe_processor.client(project).v1.payouts.retrieve(
            payout.processor_reference
        ))  # fmt: skip
        stripe_webhook(api, project, "payout.paid", {**at_stripe, "status": "paid"})
        listed = api.get("/v1/payouts").json()["results"]

    assert reported.json()["accepted"] == 1
    invoice = Invoice.objects.get(subscription=subscription, period_end__lte=NOW, total__gt=0)
    assert (invoice.status, invoice.total, invoice.amount_paid) == (InvoiceStatus.PAID, 62, 62)
    opening = Invoice.objects.get(subscription=subscription, total=0)  # a metered plan's opening invoice
    assert receiver.all_verified()
    assert [(r.payload["type"], r.payload["data"]["invoice"]) for r in receiver.requests] == [
        ("invoice.paid", opening.public_id), ("invoice.paid", invoice.public_id),
    ]  # fmt: skip
    data = receiver.requests[-1].payload["data"]
    assert (data["invoice"], data["usage"], data["status"], data["amount"], data["currency"]) == (
        invoice.public_id, "1240", "paid", 6200, "EUR",
    )  # fmt: skip
    assert pending == {
        "currency": "EUR", "available": 0, "pending": 6200, "payout": "48h",
        "balances": [{"currency": "EUR", "available": 0, "pending": 6200}],
    }  # fmt: skip
    assert (available["available"], available["pending"]) == (6200, 0)
    assert (at_stripe["amount"], at_stripe["currency"]) == (6200, "eur")
    assert (paid_out["available"], paid_out["pending"]) == (0, 0)
    assert Payout.objects.get().status == PayoutStatus.PAID
    assert [(p["amount"], p["status"]) for p in listed] == [({"amount": 6200, "currency": "EUR"}, "paid")]
