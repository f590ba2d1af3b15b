"""Payments recorded for the project's own processor, the balance they make, and their payouts."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from accounts.models import Scope
from invoicing.models import InvoiceStatus
from invoicing.services import credit_note_create
from payments.models import BalanceEntry, EntryKind, Payment, Payout, PayoutStatus
from payments.services import payment_record
from tests.conftest import api_client
from tests.invoicing.factories import issued_invoice
from webhooks.models import Event

pytestmark = pytest.mark.django_db

D = Decimal
NOV_2 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _pay(api, invoice, **body):
    return api.post(f"/v1/invoices/{invoice.public_id}/payments", body, format="json")


def _ledger(project):
    return [
        (entry.kind, entry.amount, entry.available_at)
        for entry in BalanceEntry.objects.filter(project=project).order_by("id")
    ]


@time_machine.travel(NOV_2, tick=False)
def test_partial_payments_add_up_and_the_last_one_pays_the_invoice(project, api):
    invoice = issued_invoice(project, total="100.00")

    first = _pay(api, invoice, amount=4000, reference="BANK-1", paid_at="2026-11-01T10:00:00Z")
    invoice.refresh_from_db()
    assert first.status_code == 201, first.json()
    assert first.json()["amount"] == {"amount": 4000, "currency": "USD"}
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (
        InvoiceStatus.OPEN,
        D("40.00"),
        D("60.00"),
    )

    second = _pay(api, invoice, amount=6000, reference="BANK-2", method="check")
    invoice.refresh_from_db()
    assert second.status_code == 201, second.json()
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (InvoiceStatus.PAID, D("100.00"), 0)
    assert _ledger(project) == [
        (EntryKind.PAYMENT, D("40.00"), datetime(2026, 11, 3, 10, tzinfo=UTC)),
        (EntryKind.PAYMENT, D("60.00"), NOV_2 + timedelta(hours=48)),
    ]
    types = list(Event.objects.filter(project=project).order_by("id").values_list("type", flat=True))
    assert types[-5:] == [
        "payment.succeeded", "invoice.updated", "payment.succeeded", "invoice.updated", "invoice.paid",
    ]  # fmt: skip
    paid = Event.objects.get(project=project, type="invoice.paid").data
    assert (paid["invoice"], paid["status"], paid["amount"], paid["usage"]) == (
        invoice.public_id, "paid", 10000, "0",
    )  # fmt: skip


@time_machine.travel(NOV_2, tick=False)
def test_an_overpayment_is_refused_and_changes_nothing(project, api):
    invoice = issued_invoice(project, total="100.00")
    _pay(api, invoice, amount=9000)
    events = Event.objects.count()

    response = _pay(api, invoice, amount=1001, reference="TOO-MUCH")

    invoice.refresh_from_db()
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "overpayment"
    assert response.json()["error"]["param"] == "amount"
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.OPEN, D("90.00"))
    assert Payment.objects.count() == 1
    assert BalanceEntry.objects.count() == 1
    assert Event.objects.count() == events


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": 0}, 400, "min_value"),
        ({"amount": "12.5"}, 400, "invalid_type"),
        ({"amount": 100, "method": "barter"}, 400, "invalid_choice"),
        ({"amount": 100, "tip": 1}, 400, "unknown_field"),
        ({"amount": 100, "paid_at": "2026-11-03T00:00:00Z"}, 422, "date_in_future"),
    ],
)
@time_machine.travel(NOV_2, tick=False)
def test_bad_payments_are_refused_with_a_stable_code(project, api, body, status, code):
    invoice = issued_invoice(project)

    response = _pay(api, invoice, **body)

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert not Payment.objects.exists()


def test_a_reference_is_recorded_once(project, api):
    invoice = issued_invoice(project)
    assert _pay(api, invoice, amount=100, reference="BANK-7").status_code == 201

    again = _pay(api, invoice, amount=100, reference="BANK-7")

    assert (again.status_code, again.json()["error"]["code"]) == (409, "duplicate_reference")
    assert Payment.objects.count() == 1


def test_only_open_or_uncollectible_invoices_take_payments(project, api):
    invoice = issued_invoice(project)
    void = api.post(f"/v1/invoices/{invoice.public_id}/void", {"reason": "Sent by mistake"}, format="json")
    assert void.status_code == 200

    response = _pay(api, invoice, amount=100)

    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_transition")


def test_an_uncollectible_invoice_paid_later_is_paid(project, api):
    invoice = issued_invoice(project, total="50.00")

    marked = api.post(f"/v1/invoices/{invoice.public_id}/mark-uncollectible")
    again = api.post(f"/v1/invoices/{invoice.public_id}/mark-uncollectible")
    paid = _pay(api, invoice, amount=5000)

    invoice.refresh_from_db()
    assert marked.json()["status"] == "uncollectible"
    assert (again.status_code, again.json()["error"]["code"]) == (422, "invalid_transition")
    assert paid.status_code == 201
    assert invoice.status == InvoiceStatus.PAID
    assert Event.objects.filter(type="invoice.marked_uncollectible").count() == 1


def test_a_read_only_key_reads_payments_but_records_none(project):
    invoice = issued_invoice(project)
    reader = api_client(project, [Scope.BILLING_READ])

    refused = _pay(reader, invoice, amount=100)
    uncollectible = reader.post(f"/v1/invoices/{invoice.public_id}/mark-uncollectible")

    assert (refused.status_code, uncollectible.status_code) == (403, 403)
    assert reader.get("/v1/payments").status_code == 200
    assert reader.get("/v1/balance").status_code == 200


def test_the_balance_is_pending_for_the_payout_delay_then_available_then_paid_out(project, api):
    invoice = issued_invoice(project, total="62.00")
    with time_machine.travel(NOV_2, tick=False):
        _pay(api, invoice, amount=6200, reference="BANK-9")
        pending = api.get("/v1/balance").json()
    with time_machine.travel(NOV_2 + timedelta(hours=48), tick=False):
        available = api.get("/v1/balance").json()
        out = StringIO()
        call_command("settle_balance", stdout=out)
        call_command("settle_balance", stdout=StringIO())
        after = api.get("/v1/balance").json()
        payouts = api.get("/v1/payouts").json()["results"]

    assert pending == {
        "currency": "USD", "available": 0, "pending": 6200, "payout": "48h",
        "balances": [{"currency": "USD", "available": 0, "pending": 6200}],
    }  # fmt: skip
    assert (available["available"], available["pending"]) == (6200, 0)
    assert out.getvalue().strip() == "payouts created 1; failed 0"
    assert (after["available"], after["pending"]) == (0, 0)
    assert [(p["amount"], p["status"]) for p in payouts] == [({"amount": 6200, "currency": "USD"}, "paid")]
    assert Payout.objects.get().status == PayoutStatus.PAID
    assert [t for t in Event.objects.order_by("id").values_list("type", flat=True) if t.startswith("payout")] == [
        "payout.created", "payout.paid",
    ]  # fmt: skip


def test_another_projects_invoice_and_credit_note_are_not_found(project, other_project, api):
    theirs = issued_invoice(other_project)
    payment_record(invoice=theirs, amount=theirs.total, actor=None)
    note = credit_note_create(invoice=theirs, actor=None, reason="duplicate", amount=D("1.00"))

    paid = _pay(api, theirs, amount=100)
    refunded = api.post(f"/v1/credit-notes/{note.public_id}/refund", {}, format="json")

    assert [(r.status_code, r.json()["error"]["code"]) for r in (paid, refunded)] == [(404, "not_found")] * 2
    assert Payment.objects.count() == 1


def test_a_credit_note_on_a_paid_invoice_refunds_the_manual_payment(project, api):
    invoice = issued_invoice(project, total="100.00")
    _pay(api, invoice, amount=10000, reference="BANK-1")
    note = api.post(
        f"/v1/invoices/{invoice.public_id}/credit-notes",
        {"reason": "duplicate", "amount": 2500},
        format="json",
    ).json()

    refunded = api.post(f"/v1/credit-notes/{note['id']}/refund", {"reference": "BANK-R1"}, format="json")
    again = api.post(f"/v1/credit-notes/{note['id']}/refund", {}, format="json")

    assert refunded.status_code == 201
    [refund] = refunded.json()
    assert (refund["amount"], refund["status"], refund["processor_reference"]) == (
        {"amount": 2500, "currency": "USD"}, "succeeded", "BANK-R1",
    )  # fmt: skip
    assert (again.status_code, again.json()["error"]["code"]) == (422, "nothing_to_refund")
    assert Payment.objects.get().amount_refunded == D("25.00")
    assert [(kind, amount) for kind, amount, _ in _ledger(project)] == [
        (EntryKind.PAYMENT, D("100.00")), (EntryKind.REFUND, D("-25.00")),
    ]  # fmt: skip
    assert Event.objects.filter(type="payment.refunded").count() == 1


def test_unmatched_payments_are_listed_apart_and_the_filter_takes_only_booleans(project, api):
    invoice = issued_invoice(project)
    matched = payment_record(invoice=invoice, amount=invoice.total, actor=None)
    stray = Payment.objects.create(
        project=project, processor="stripe", processor_reference="pi_stray", currency="USD", amount=D("5.00"),
        status="succeeded", attempt=0,
    )  # fmt: skip

    unmatched = api.get("/v1/payments?unmatched=true").json()["results"]
    others = api.get("/v1/payments?unmatched=false").json()["results"]
    refused = api.get("/v1/payments?unmatched=null")

    assert [p["id"] for p in unmatched] == [stray.public_id]
    assert [p["id"] for p in others] == [matched.public_id]
    assert refused.status_code == 400


def test_an_overpayment_says_what_is_due_in_minor_units(project, api):
    invoice = issued_invoice(project, total="100.00")

    error = _pay(api, invoice, amount=10001).json()["error"]

    assert (error["message"], error["amount_due"]) == (
        "100.01 is more than the 100.00 USD due on this invoice.",
        10000,
    )
