"""The waterfall on real invoices: coupons, taxes, prepaid credits, minimums and commitments,
through the period close, the preview, the API and the concurrency of issuing."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction

from billing_site.errors import Unprocessable
from catalog.coupons import coupon_create, coupon_redeem
from catalog.models import TaxStatus
from invoicing import credits
from invoicing.billing import billing_close, draft_refresh, invoice_preview
from invoicing.models import BillingReason, CreditNote, Invoice, InvoiceStatus, LineType
from invoicing.purchases import credits_purchase
from invoicing.services import credit_note_create, invoice_issue, invoice_void
from invoicing.taxes import REVERSE_CHARGE_NOTE
from tests.catalog.factories import CustomerFactory, MeterFactory, TaxRateFactory, make_plan, subscribe
from tests.invoicing.factories import credits_granted, draft_invoice

pytestmark = pytest.mark.django_db

D = Decimal
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
JAN_17 = datetime(2026, 1, 17, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(JAN_1, tick=False) as traveller:
        yield traveller


@pytest.fixture
def customer(project):
    return CustomerFactory(project=project, external_id="acme", timezone="UTC")


@pytest.fixture
def calls(project):
    return MeterFactory(project=project, code="api_calls", name="API calls", aggregation="count")


def usage(api, clock, count, at, *, reported=None):
    clock.move_to(reported or at + timedelta(hours=1))
    body = [{"customer": "acme", "meter": "api_calls", "timestamp": at.isoformat()} for _ in range(count)]
    assert api.post("/v1/usage", body, format="json").status_code == 200


def close(clock, at):
    clock.move_to(at)
    return billing_close(as_of=at)


def steps(invoice):
    """The invoice's lines as (type, description, amount), in order."""
    return [(line.type, line.description, line.amount) for line in invoice.lines.order_by("position", "id")]


def totals(invoice):
    invoice.refresh_from_db()
    return (
        invoice.subtotal,
        invoice.discount,
        invoice.tax,
        invoice.total,
        invoice.credits_applied,
        invoice.amount_due,
    )


def coupon(project, **fields):
    defaults = {"code": "launch", "name": "Launch", "kind": "percentage", "percent_off": "20"}
    return coupon_create(project=project, actor=None, **{**defaults, **fields})


def test_a_cycle_invoice_carries_discount_tax_and_credits_in_that_order(api, clock, project, customer, calls):
    # Given a 100.00 monthly plan, 20 % off forever, 20 % VAT and 50.00 of prepaid credits
    plan = make_plan(project, name="Pro", base_fee="100", base_fee_timing="in_arrears")
    TaxRateFactory(project=project, name="VAT", percentage=D(20), jurisdiction="", is_default=True)
    subscription = subscribe(customer, plan, starts_at=JAN_1)
    coupon_redeem(
        customer=customer, coupon=coupon(project, duration="forever"), subscription=subscription, actor=None
    )
    credits_granted(customer, "USD", "50.00", at=JAN_1)

    # When January closes
    close(clock, FEB_1 + timedelta(hours=1))

    # Then 100.00 - 20.00 + 16.00 = 96.00, of which credits pay 50.00
    invoice = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert steps(invoice) == [
        (LineType.BASE_FEE, "Pro — base fee", D("100.00")),
        (LineType.DISCOUNT, "Discount: Launch (20 %)", D("-20.00")),
        (LineType.TAX, "VAT 20 %", D("16.00")),
        (LineType.PREPAID_CREDIT, "Prepaid credits", D("-50.00")),
    ]
    assert totals(invoice) == (D("100.00"), D("20.00"), D("16.00"), D("96.00"), D("50.00"), D("46.00"))
    base = invoice.lines.get(type=LineType.BASE_FEE)
    assert (base.discount_amount, base.tax_amount) == (D("20.00"), D("16.00"))
    assert invoice.status == InvoiceStatus.OPEN

    # And the API shows the same waterfall, in minor units
    body = api.get(f"/v1/invoices/{invoice.public_id}").json()
    assert [body[name]["amount"] for name in ("subtotal", "discount", "tax", "total", "credits_applied")] == [
        10000, 2000, 1600, 9600, 5000,
    ]  # fmt: skip
    assert body["amount_due"]["amount"] == 4600


def test_a_once_coupon_discounts_one_invoice_and_a_voided_one_gives_it_back(project, customer):
    # Given a once coupon for the customer and three invoices issued one after the other
    coupon_redeem(customer=customer, coupon=coupon(project), actor=None)
    first = draft_invoice(project, total="50.00", customer=customer)
    with transaction.atomic():
        invoice_issue(invoice=Invoice.objects.get(pk=first.pk), actor=None)
    second = draft_invoice(project, total="50.00", customer=customer)
    with transaction.atomic():
        invoice_issue(invoice=Invoice.objects.get(pk=second.pk), actor=None)

    # Then only the first was discounted
    assert totals(first)[1:4] == (D("10.00"), D(0), D("40.00"))
    assert totals(second)[1:4] == (D(0), D(0), D("50.00"))

    # When the first is voided, the next invoice takes the coupon again
    invoice_void(invoice=first, actor=None, reason="wrong customer")
    third = draft_invoice(project, total="30.00", customer=customer)
    with transaction.atomic():
        invoice_issue(invoice=Invoice.objects.get(pk=third.pk), actor=None)
    assert totals(third)[1:4] == (D("6.00"), D(0), D("24.00"))


def test_a_repeating_coupon_limited_to_a_plan_discounts_its_lines_for_n_invoices(
    api, clock, project, customer, calls
):
    # Given a 10 % coupon for 2 invoices limited to the Pro plan's API calls charge
    plan = make_plan(
        project,
        name="Pro",
        base_fee="30",
        charges=[{"meter": calls, "name": "API calls", "unit_price": "0.50"}],
    )
    charge = plan.charges.get()
    limited = coupon(
        project, percent_off="10", duration="repeating", duration_periods=2, charges=[charge.public_id]
    )
    subscribe(customer, plan, starts_at=JAN_1)
    coupon_redeem(customer=customer, coupon=limited, actor=None)
    billing_close(as_of=JAN_1)
    usage(api, clock, 40, JAN_17)
    close(clock, FEB_1 + timedelta(hours=1))
    usage(api, clock, 20, FEB_1 + timedelta(days=3))
    close(clock, MAR_1 + timedelta(hours=1))
    usage(api, clock, 10, MAR_1 + timedelta(days=3))
    close(clock, datetime(2026, 4, 1, 1, tzinfo=UTC))

    # Then the opening invoice (no API calls) did not use it; January and February did; March not
    discounts = [invoice.discount for invoice in Invoice.objects.filter(customer=customer).order_by("id")]
    assert discounts == [D(0), D("2.00"), D("1.00"), D(0)]


def test_a_fixed_amount_coupon_is_prorated_with_a_partial_first_period(project, customer):
    # Given a 62.00 plan started on 17 January (15 of January's 31 days) and 31.00 off once
    plan = make_plan(project, name="Pro", base_fee="62")
    coupon_redeem(
        customer=customer,
        coupon=coupon(project, kind="fixed_amount", percent_off=None, amount_off={"USD": "31.00"}),
        actor=None,
    )
    with time_machine.travel(JAN_17, tick=False):
        subscribe(customer, plan, starts_at=JAN_17)
        billing_close(as_of=JAN_17)

    # Then the opening invoice bills 30.00 of fee and takes 31.00 × 15/31 = 15.00 off
    opening = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_START)
    assert totals(opening)[:4] == (D("30.00"), D("15.00"), D(0), D("15.00"))


def test_a_charge_minimum_and_a_plan_commitment_are_true_up_lines(api, clock, project, customer, calls):
    # Given a 30.00 fee in advance, 0.10 a call under a 25.00 minimum, and a 100.00 commitment
    plan = make_plan(
        project,
        name="Pro",
        base_fee="30",
        minimum_commitment="100",
        charges=[{"meter": calls, "name": "API calls", "unit_price": "0.10", "minimum_amount": "25"}],
    )
    subscribe(customer, plan, starts_at=JAN_1)
    billing_close(as_of=JAN_1)
    usage(api, clock, 120, JAN_17)

    close(clock, FEB_1 + timedelta(hours=1))

    # Then usage 12.00, its minimum 13.00, and the commitment makes up 100 - (30 + 12 + 13) = 45.00
    invoice = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE, period_start=JAN_1)
    assert steps(invoice) == [
        (LineType.USAGE, "API calls", D("12.00")),
        (LineType.MINIMUM, "API calls — minimum 25.00 USD (true-up)", D("13.00")),
        (LineType.COMMITMENT, "Pro — minimum commitment 100.00 USD (true-up)", D("45.00")),
        (LineType.BASE_FEE, "Pro — base fee", D("30.00")),
    ]
    assert invoice.total == D("100.00")


def test_an_inclusive_tax_is_shown_and_not_added(project, customer):
    TaxRateFactory(
        project=project, name="VAT", percentage=D(20), inclusive=True, jurisdiction="FR", is_default=True
    )

    invoice = draft_invoice(project, total="120.00", customer=customer)
    with transaction.atomic():
        invoice_issue(invoice=Invoice.objects.get(pk=invoice.pk), actor=None)

    assert steps(invoice)[1:] == [(LineType.TAX, "VAT 20 % (FR), included", D("20.00"))]
    assert totals(invoice)[2:4] == (D("20.00"), D("120.00"))


def test_the_most_specific_rate_wins_and_a_reverse_charge_customer_pays_none(project, customer):
    TaxRateFactory(project=project, name="VAT", percentage=D(20), jurisdiction="", is_default=True)
    reduced = TaxRateFactory(project=project, name="Reduced VAT", percentage=D("5.5"), jurisdiction="")
    customer.tax_rates.set([reduced])

    taxed = draft_invoice(project, total="100.00", customer=customer)
    with transaction.atomic():
        invoice_issue(invoice=Invoice.objects.get(pk=taxed.pk), actor=None)
    assert steps(taxed)[1:] == [(LineType.TAX, "Reduced VAT 5.5 %", D("5.50"))]

    customer.tax_status, customer.tax_id = TaxStatus.REVERSE_CHARGE, "DE123456789"
    customer.save()
    exempt = draft_invoice(project, total="100.00", customer=customer)
    with transaction.atomic():
        invoice_issue(invoice=Invoice.objects.get(pk=exempt.pk), actor=None)
    exempt.refresh_from_db()
    assert (exempt.tax, exempt.total) == (D(0), D("100.00"))
    assert exempt.tax_note == f"{REVERSE_CHARGE_NOTE} Customer VAT ID: DE123456789."


def test_the_preview_shows_the_waterfall_as_issuing_would(clock, project, customer):
    plan = make_plan(project, name="Pro", base_fee="100", base_fee_timing="in_arrears")
    TaxRateFactory(project=project, name="VAT", percentage=D(10), jurisdiction="", is_default=True)
    subscription = subscribe(customer, plan, starts_at=JAN_1)
    coupon_redeem(customer=customer, coupon=coupon(project, duration="forever"), actor=None)
    credits_granted(customer, "USD", "8.00", at=JAN_1)

    preview = invoice_preview(subscription=subscription)

    assert [(line.type, line.amount) for line in preview.preview_lines] == [
        (LineType.BASE_FEE, D("100.00")),
        (LineType.DISCOUNT, D("-20.00")),
        (LineType.TAX, D("8.00")),
        (LineType.PREPAID_CREDIT, D("-8.00")),
    ]
    assert (preview.total, preview.credits_applied, preview.amount_due) == (D("88.00"), D("8.00"), D("80.00"))


def test_an_invoice_credits_pay_in_full_is_issued_paid(project, customer):
    credits_granted(customer, "USD", "80.00", at=JAN_1)

    invoice = draft_invoice(project, total="75.00", customer=customer)
    with transaction.atomic():
        invoice_issue(invoice=Invoice.objects.get(pk=invoice.pk), actor=None)

    invoice.refresh_from_db()
    assert (invoice.status, invoice.credits_applied, invoice.amount_due) == (
        InvoiceStatus.PAID,
        D("75.00"),
        0,
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_subscriptions_issuing_at_once_use_a_once_coupon_once(project):
    from tests.concurrency import all_at_once

    customer = CustomerFactory(project=project)
    coupon_redeem(customer=customer, coupon=coupon(project), actor=None)
    claimed = iter([draft_invoice(project, total="40.00", customer=customer) for _ in range(2)])

    def issue():
        with transaction.atomic():
            invoice = Invoice.objects.select_for_update().get(pk=next(claimed).pk)
            return invoice_issue(invoice=invoice, actor=None).discount

    assert sorted(all_at_once(issue, 2)) == [D(0), D("8.00")]


def _issued(project, customer, total):
    invoice = draft_invoice(project, total=total, customer=customer)
    with transaction.atomic():
        return invoice_issue(invoice=Invoice.objects.get(pk=invoice.pk), actor=None)


def test_a_credit_note_gives_back_the_credits_an_invoice_took_beyond_what_is_due(project, customer):
    # Given a 100.00 invoice of which 40.00 of prepaid credits paid part, 60.00 still due
    grant = credits_granted(customer, "USD", "40.00", at=JAN_1)
    invoice = _issued(project, customer, "100.00")
    assert (invoice.credits_applied, invoice.amount_due) == (D("40.00"), D("60.00"))

    # When it is credited in full
    note = credit_note_create(invoice=invoice, actor=None, reason="order_change")

    # Then 60.00 cancels what was due and 40.00 goes back to the grant: no refund of money is owed
    assert (note.amount_credited, note.credits_returned, note.refund_owed) == (D("60.00"), D("40.00"), D(0))
    assert credits.grant_balance(grant) == D("40.00")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_due) == (InvoiceStatus.PAID, 0)


def test_a_credit_note_on_an_invoice_credits_paid_in_full_returns_them(project, customer):
    grant = credits_granted(customer, "USD", "50.00", at=JAN_1)
    invoice = _issued(project, customer, "30.00")
    assert invoice.status == InvoiceStatus.PAID

    first = credit_note_create(invoice=invoice, actor=None, reason="duplicate", amount=D("10.00"))
    second = credit_note_create(invoice=invoice, actor=None, reason="duplicate")

    assert [(n.credits_returned, n.refund_owed) for n in (first, second)] == [
        (D("10.00"), 0),
        (D("20.00"), 0),
    ]
    assert credits.grant_balance(grant) == D("50.00")


def test_a_credit_purchase_is_not_credited(project, customer):
    grant = credits_purchase(customer=customer, currency="USD", amount=D("100"), actor=None)
    before = (CreditNote.objects.count(), credits.grant_balance(grant))

    with pytest.raises(Unprocessable) as refused:
        credit_note_create(invoice=grant.invoice, actor=None, reason="order_change")

    assert refused.value.code == "credit_purchase_not_creditable"
    assert (CreditNote.objects.count(), credits.grant_balance(grant)) == before
    grant.refresh_from_db()
    assert grant.available_at is None


def test_a_line_is_credited_up_to_what_it_cost_after_discount_and_tax(project, customer):
    TaxRateFactory(project=project, name="VAT", percentage=D(20), jurisdiction="", is_default=True)
    coupon_redeem(customer=customer, coupon=coupon(project, percent_off="50"), actor=None)
    invoice = _issued(project, customer, "100.00")
    fee = invoice.lines.get(type=LineType.BASE_FEE)
    discount = invoice.lines.get(type=LineType.DISCOUNT)

    with pytest.raises(Unprocessable) as too_much:
        credit_note_create(
            invoice=invoice, actor=None, reason="order_change", lines=[{"line": fee, "amount": "60.01"}]
        )
    with pytest.raises(Unprocessable) as waterfall:
        credit_note_create(invoice=invoice, actor=None, reason="order_change", lines=[{"line": discount}])
    whole_line = credit_note_create(invoice=invoice, actor=None, reason="order_change", lines=[{"line": fee}])

    assert (too_much.value.code, waterfall.value.code) == ("credit_exceeds_line", "line_not_creditable")
    assert whole_line.amount == D("60.00")  # 100.00 - 50.00 + 20 % VAT on 50.00


def test_late_usage_fills_the_commitment_it_was_trued_up_to_before_it_costs_more(
    api, clock, project, customer, calls
):
    # Given January trued up to a 100.00 commitment: 30.00 fee + 12.00 usage + 13.00 minimum + 45.00
    plan = make_plan(
        project,
        name="Pro",
        base_fee="30",
        minimum_commitment="100",
        charges=[{"meter": calls, "name": "API calls", "unit_price": "0.10", "minimum_amount": "25"}],
    )
    subscribe(customer, plan, starts_at=JAN_1)
    billing_close(as_of=JAN_1)
    usage(api, clock, 120, JAN_17)
    close(clock, FEB_1 + timedelta(hours=1))

    # When 200 more January calls arrive late (32.00 of usage in all: the minimum no longer applies)
    usage(api, clock, 200, JAN_17 + timedelta(hours=2), reported=FEB_1 + timedelta(days=9))
    close(clock, MAR_1 + timedelta(hours=1))

    # Then February's invoice bills January's 7.00 more usage and takes 7.00 off its true-up
    february = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE, period_start=FEB_1)
    january = [step for step in steps(february) if "2026-01-01" in step[1]]
    assert january == [
        (LineType.LATE_USAGE, "API calls — late usage for 2026-01-01 – 2026-02-01", D("7.00")),
        (
            LineType.COMMITMENT,
            "Pro — minimum commitment for 2026-01-01 – 2026-02-01, with its late usage",
            D("-7.00"),
        ),
    ]


def test_a_draft_shows_a_coupon_applied_after_it_was_computed(
    api, clock, project, customer, django_capture_on_commit_callbacks
):
    plan = make_plan(project, name="Pro", base_fee="100", base_fee_timing="in_arrears")
    subscription = subscribe(customer, plan, starts_at=JAN_1)
    clock.move_to(JAN_17)
    draft = draft_refresh(subscription=subscription)
    assert draft.discount == 0

    with django_capture_on_commit_callbacks(execute=True):
        coupon_redeem(customer=customer, coupon=coupon(project, duration="forever"), actor=None)

    body = api.get(f"/v1/invoices/{draft.public_id}").json()
    assert (body["discount"]["amount"], body["total"]["amount"]) == (2000, 8000)


def test_a_preview_on_another_plan_shows_its_commitment_and_the_waterfall_totals(
    api, clock, project, customer
):
    current = make_plan(project, name="Basic", base_fee="10")
    committed = make_plan(project, name="Scale", base_fee="30", minimum_commitment="100")
    TaxRateFactory(project=project, name="VAT", percentage=D(10), jurisdiction="", is_default=True)
    subscription = subscribe(customer, current, starts_at=JAN_1)
    clock.move_to(JAN_17)

    response = api.post(
        "/v1/invoices/preview",
        {"subscription": subscription.public_id, "plan": committed.public_id},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert [(line["type"], line["amount"]["amount"]) for line in body["lines"]] == [
        ("base_fee", 3000),
        ("commitment", 7000),
        ("tax", 1000),
    ]
    assert [body[name]["amount"] for name in ("subtotal", "discount", "tax", "total", "amount_due")] == [
        10000, 0, 1000, 11000, 11000,
    ]  # fmt: skip
