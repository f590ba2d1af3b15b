from decimal import Decimal

import pytest

from invoicing.models import CreditNote, Invoice, InvoiceLine, InvoiceStatus, LineType
from tests.invoicing.factories import issued_invoice
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def _post(api, invoice, action, body=None):
    return api.post(f"/v1/invoices/{invoice.public_id}/{action}", body or {}, format="json")


def test_void_needs_a_reason_and_records_it(api, project):
    invoice = issued_invoice(project)

    refused = _post(api, invoice, "void")
    voided = _post(api, invoice, "void", {"reason": "Issued to the wrong entity"})

    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "reason")
    assert (voided.json()["status"], voided.json()["void_reason"]) == ("void", "Issued to the wrong entity")
    assert Event.objects.filter(type="invoice.voided", object_id=invoice.public_id).count() == 1


def test_a_paid_invoice_is_credited_not_voided(api, project):
    invoice = issued_invoice(project)
    Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.PAID, amount_paid=Decimal("100.00"))

    response = _post(api, invoice, "void", {"reason": "late"})

    assert response.status_code == 422
    assert response.json()["error"]["current"] == "paid"
    assert "credit note" in response.json()["error"]["message"]
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.PAID


def test_a_partial_credit_reduces_what_is_due(api, project):
    invoice = issued_invoice(project, total="100.00")
    line = invoice.lines.get()

    body = _post(
        api,
        invoice,
        "credit-notes",
        {"reason": "billing_error", "lines": [{"line": line.public_id, "amount": 2550}]},
    )

    note = body.json()
    assert body.status_code == 201
    assert (note["number"], note["amount"], note["amount_credited"], note["refund_owed"]) == (
        "ACME-CN-000001", {"amount": 2550, "currency": "USD"}, {"amount": 2550, "currency": "USD"},
        {"amount": 0, "currency": "USD"},
    )  # fmt: skip
    shown = api.get(f"/v1/invoices/{invoice.public_id}").json()
    assert (shown["status"], shown["amount_due"]["amount"], shown["amount_credited"]["amount"]) == (
        "open",
        7450,
        2550,
    )


def test_crediting_a_paid_invoice_records_a_refund_owed(api, project):
    invoice = issued_invoice(project, total="100.00")
    Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.PAID, amount_paid=Decimal("100.00"))

    note = _post(api, invoice, "credit-notes", {"reason": "product_unsatisfactory"}).json()

    assert (note["amount"]["amount"], note["amount_credited"]["amount"], note["refund_owed"]["amount"]) == (
        10000,
        0,
        10000,
    )


def test_a_full_credit_settles_an_open_invoice(api, project):
    invoice = issued_invoice(project, total="40.00")

    _post(api, invoice, "credit-notes", {"reason": "duplicate"})

    shown = api.get(f"/v1/invoices/{invoice.public_id}").json()
    assert (shown["status"], shown["amount_due"]["amount"]) == ("paid", 0)
    types = list(Event.objects.filter(object_id__in=[invoice.public_id, *CreditNote.objects.values_list("public_id", flat=True)])
                 .order_by("id").values_list("type", flat=True))  # fmt: skip
    assert types[-3:] == ["credit_note.created", "invoice.updated", "invoice.paid"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"reason": "whim"}, 400, "invalid_choice"),
        ({"reason": "duplicate", "amount": 10001}, 422, "credit_exceeds_total"),
        ({"reason": "duplicate", "lines": [{"line": "il_nope"}]}, 422, "unknown_line"),
        ({"reason": "duplicate", "lines": [{"line": "LINE", "amount": 10001}]}, 422, "credit_exceeds_line"),
    ],
)
def test_impossible_credits_are_refused_and_change_nothing(api, project, body, status, code):
    invoice = issued_invoice(project, total="100.00")
    if "lines" in body and body["lines"][0]["line"] == "LINE":
        body["lines"][0]["line"] = invoice.lines.get().public_id

    response = _post(api, invoice, "credit-notes", body)

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert not CreditNote.objects.exists()
    assert Invoice.objects.get(pk=invoice.pk).amount_credited == 0


def test_credits_never_exceed_the_total_across_notes(api, project):
    invoice = issued_invoice(project, total="100.00")
    _post(api, invoice, "credit-notes", {"reason": "billing_error", "amount": 6000})

    second = _post(api, invoice, "credit-notes", {"reason": "billing_error", "amount": 5000})
    rest = _post(api, invoice, "credit-notes", {"reason": "billing_error"})

    assert second.json()["error"]["code"] == "credit_exceeds_total"
    assert rest.json()["amount"]["amount"] == 4000
    assert [n.number for n in CreditNote.objects.order_by("id")] == ["ACME-CN-000001", "ACME-CN-000002"]


def test_adjustments_only_on_editable_invoices_and_they_survive_recomputation(api, project):
    issued = issued_invoice(project)
    refused = _post(
        api, issued, "adjustments", {"amount": 500, "description": "Onboarding", "reason": "Agreed on call"}
    )

    draft = Invoice.objects.create(
        project=project, customer=issued.customer, subscription=issued.subscription, billing_reason="subscription_cycle",
        currency="USD", period_start=issued.subscription.current_period_start, period_end=issued.subscription.current_period_end,
    )  # fmt: skip
    added = _post(
        api,
        draft,
        "adjustments",
        {"amount": -1250, "description": "Goodwill credit", "reason": "Outage on 3 March"},
    )
    from invoicing.billing import invoice_rebuild

    invoice_rebuild(invoice=draft)

    assert (refused.status_code, refused.json()["error"]["current"]) == (422, "open")
    assert added.status_code == 200
    manual = InvoiceLine.objects.get(invoice=draft, is_manual=True)
    assert (manual.type, manual.amount, manual.reason) == (
        LineType.CREDIT,
        Decimal("-12.50"),
        "Outage on 3 March",
    )
    draft.refresh_from_db()
    assert draft.total == sum(line.amount for line in draft.lines.all())
