"""Billing end to end: usage reported through the API, periods closed, invoices priced to the cent."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from invoicing.billing import billing_close, draft_refresh, invoice_preview
from invoicing.models import BillingReason, Invoice, InvoiceStatus, LineType
from invoicing.rating import Pricing, rate_percentage_events
from meters.selectors import percentage_usage
from subscriptions.periods import Period
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from webhooks.models import Event

pytestmark = pytest.mark.django_db

D = Decimal
JAN_15 = datetime(2026, 1, 15, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)
APR_1 = datetime(2026, 4, 1, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(JAN_15, tick=False) as traveller:
        yield traveller


@pytest.fixture
def meter(project):
    return MeterFactory(project=project, code="api_calls", name="API calls")


@pytest.fixture
def hybrid(project, meter):
    return make_plan(
        project,
        name="Pro",
        base_fee="49",
        charges=[{"meter": meter, "name": "API calls", "unit_price": "0.01"}],
    )


@pytest.fixture
def customer(project):
    return CustomerFactory(project=project, external_id="acme", timezone="UTC")


def usage(api, value, at, *, customer="acme", meter="api_calls", key=None):
    body = {"customer": customer, "meter": meter, "value": value, "timestamp": at.isoformat()}
    if key:
        body["idempotency_key"] = key
    response = api.post("/v1/usage", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def close(clock, at):
    clock.move_to(at)
    return billing_close(as_of=at)


def lines(invoice):
    return [
        (line.type, line.description, line.quantity, line.amount)
        for line in invoice.lines.order_by("position")
    ]


def test_the_first_invoice_carries_the_advance_fee_and_the_second_the_first_usage(
    api, clock, customer, hybrid, project
):
    subscription = subscribe(customer, hybrid, starts_at=JAN_15)

    opened = billing_close(as_of=JAN_15)
    clock.move_to(datetime(2026, 1, 20, 10, tzinfo=UTC))
    usage(api, 1240, datetime(2026, 1, 20, 9, tzinfo=UTC))
    run = close(clock, FEB_1 + timedelta(hours=1))

    opening = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_START)
    assert (opened.closed.opened, opened.closed.finalized) == (1, 1)
    assert lines(opening) == [(LineType.BASE_FEE, "Pro — base fee", D("0.548387"), D("26.87"))]  # 49 × 17/31
    assert (opening.number, opening.status, opening.total) == ("ACME-000001", InvoiceStatus.OPEN, D("26.87"))
    second = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert (run.closed.periods_closed, second.period_start, second.period_end) == (1, JAN_15, FEB_1)
    assert lines(second) == [
        (LineType.USAGE, "API calls", D(1240), D("12.40")),
        (LineType.BASE_FEE, "Pro — base fee", D(1), D("49.00")),
    ]
    assert (second.number, second.total, second.status) == ("ACME-000002", D("61.40"), InvoiceStatus.OPEN)
    assert second.due_at == second.issued_at + timedelta(days=project.payment_terms_days)
    subscription.refresh_from_db()
    assert (subscription.current_period_start, subscription.current_period_end) == (FEB_1, MAR_1)


def test_a_metered_plan_opens_with_a_zero_invoice_marked_paid(clock, customer, project, meter):
    metered = make_plan(project, charges=[{"meter": meter, "unit_price": "0.01"}])
    subscribe(customer, metered, starts_at=JAN_15)

    billing_close(as_of=JAN_15)

    opening = Invoice.objects.get()
    assert (opening.total, opening.status, opening.number, lines(opening)) == (
        D(0),
        InvoiceStatus.PAID,
        "ACME-000001",
        [],
    )
    assert list(
        Event.objects.filter(object_id=opening.public_id).values_list("type", flat=True).order_by("id")
    ) == [
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
    ]


def test_fees_in_arrears_are_billed_for_the_period_that_ended(clock, customer, project):
    arrears = make_plan(project, name="Support", base_fee="31", base_fee_timing="in_arrears")
    subscribe(customer, arrears, starts_at=JAN_15)

    close(clock, FEB_1 + timedelta(hours=1))

    opening, cycle = Invoice.objects.order_by("id")
    assert opening.total == 0
    assert lines(cycle) == [
        (LineType.BASE_FEE, "Support — base fee", D("0.548387"), D("17.00"))
    ]  # 31 × 17/31


def test_no_base_fee_during_the_trial_but_usage_is_billed(api, clock, customer, project, meter):
    trial = make_plan(
        project,
        name="Pro",
        base_fee="31",
        trial_days=10,
        charges=[{"meter": meter, "name": "API calls", "unit_price": "1"}],
    )
    subscribe(customer, trial, starts_at=JAN_15)
    billing_close(as_of=JAN_15)
    clock.move_to(datetime(2026, 1, 16, tzinfo=UTC))
    usage(api, 5, datetime(2026, 1, 16, tzinfo=UTC))

    close(clock, FEB_1 + timedelta(hours=1))

    opening, cycle = Invoice.objects.order_by("id")
    assert lines(opening) == [
        (LineType.BASE_FEE, "Pro — base fee", D("0.225806"), D("7.00"))
    ]  # 7 of 31 days after trial
    assert lines(cycle)[0] == (LineType.USAGE, "API calls", D(5), D("5.00"))


def test_usage_during_the_trial_is_free_when_the_plan_says_so(api, clock, customer, project, meter):
    trial = make_plan(
        project, trial_days=10, bill_usage_during_trial=False, charges=[{"meter": meter, "unit_price": "1"}]
    )
    subscribe(customer, trial, starts_at=JAN_15)
    clock.move_to(datetime(2026, 1, 16, tzinfo=UTC))
    usage(api, 5, datetime(2026, 1, 16, tzinfo=UTC))  # in the trial
    clock.move_to(datetime(2026, 1, 30, tzinfo=UTC))
    usage(api, 3, datetime(2026, 1, 30, tzinfo=UTC))  # after it

    close(clock, FEB_1 + timedelta(hours=1))

    cycle = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert [(t, q, a) for t, _, q, a in lines(cycle)] == [(LineType.USAGE, D(3), D("3.00"))]


def test_a_plan_change_mid_period_prorates_the_base_fee_and_splits_usage(
    api, clock, customer, project, meter, hybrid
):
    scale = make_plan(
        project,
        name="Scale",
        base_fee="99",
        charges=[{"meter": meter, "name": "API calls", "unit_price": "0.005"}],
    )
    subscription = subscribe(customer, hybrid, starts_at=FEB_1)
    close(clock, FEB_1)  # opening invoice: 49 for February
    clock.move_to(datetime(2026, 2, 8, tzinfo=UTC))
    usage(api, 1000, datetime(2026, 2, 3, tzinfo=UTC))
    clock.move_to(datetime(2026, 2, 15, tzinfo=UTC))
    api.patch(f"/v1/subscriptions/{subscription.public_id}", {"plan": scale.public_id}, format="json")
    clock.move_to(datetime(2026, 2, 20, tzinfo=UTC))
    usage(api, 1000, datetime(2026, 2, 20, tzinfo=UTC))

    close(clock, MAR_1 + timedelta(hours=1))

    cycle = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert lines(cycle) == [
        (
            LineType.CREDIT,
            "Pro — base fee: unused time (proration)",
            D(1),
            D("-24.50"),
        ),  # 14 of 28 days unused
        (LineType.BASE_FEE, "Scale — base fee: added time (proration)", D(1), D("49.50")),  # 99 × 14/28
        (LineType.USAGE, "API calls", D(1000), D("10.00")),  # before the change, at 0.01
        (LineType.USAGE, "API calls", D(1000), D("5.00")),  # after it, at 0.005
        (LineType.BASE_FEE, "Scale — base fee", D(1), D("99.00")),  # March in advance
    ]
    assert cycle.total == D("139.00")


def test_canceling_mid_period_credits_the_unused_advance_fee_and_ends_billing(api, clock, customer, hybrid):
    subscription = subscribe(customer, hybrid, starts_at=FEB_1)
    close(clock, FEB_1)
    clock.move_to(datetime(2026, 2, 8, tzinfo=UTC))
    api.patch(f"/v1/subscriptions/{subscription.public_id}", {"status": "canceled"}, format="json")

    run = close(clock, datetime(2026, 2, 8, 1, tzinfo=UTC))
    again = close(clock, APR_1)

    last = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert (last.period_start, last.period_end) == (FEB_1, datetime(2026, 2, 8, tzinfo=UTC))
    assert lines(last) == [
        (LineType.CREDIT, "Pro — base fee: unused time (proration)", D(1), D("-36.75")),  # 21 of 28 days
        (LineType.USAGE, "API calls", D(0), D("0.00")),
    ]
    assert (run.closed.periods_closed, again.closed.periods_closed, Invoice.objects.count()) == (1, 0, 2)


def test_canceling_at_period_end_bills_no_next_period(clock, customer, hybrid, api):
    subscription = subscribe(customer, hybrid, starts_at=FEB_1)
    clock.move_to(datetime(2026, 2, 10, tzinfo=UTC))
    api.patch(
        f"/v1/subscriptions/{subscription.public_id}",
        {"status": "canceled", "cancel_at_period_end": True},
        format="json",
    )

    close(clock, MAR_1 + timedelta(hours=1))

    cycle = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert [t for t, *_ in lines(cycle)] == [LineType.USAGE]


def test_a_pause_credits_the_paused_time(api, clock, customer, hybrid):
    subscription = subscribe(customer, hybrid, starts_at=FEB_1)
    close(clock, FEB_1)
    clock.move_to(datetime(2026, 2, 8, tzinfo=UTC))
    api.patch(f"/v1/subscriptions/{subscription.public_id}", {"status": "paused"}, format="json")
    clock.move_to(datetime(2026, 2, 15, tzinfo=UTC))
    api.patch(f"/v1/subscriptions/{subscription.public_id}", {"status": "active"}, format="json")

    close(clock, MAR_1 + timedelta(hours=1))

    cycle = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert lines(cycle)[0] == (
        LineType.CREDIT,
        "Pro — base fee: unused time (proration)",
        D(1),
        D("-12.25"),
    )  # 7/28


def test_drafts_show_the_upcoming_invoice_priced_and_follow_usage(api, clock, customer, hybrid):
    subscribe(customer, hybrid, starts_at=FEB_1)
    close(clock, FEB_1)  # the opening invoice, as the scheduler issues it at the start
    clock.move_to(datetime(2026, 2, 5, tzinfo=UTC))
    usage(api, 100, datetime(2026, 2, 4, tzinfo=UTC))

    first = draft_refresh(subscription=customer.subscriptions.get())
    usage(api, 50, datetime(2026, 2, 5, tzinfo=UTC))
    second = draft_refresh(subscription=customer.subscriptions.get())
    unchanged = draft_refresh(subscription=customer.subscriptions.get())
    listed = api.get(f"/v1/invoices?status=draft&customer={customer.public_id}").json()["results"]

    assert first.pk == second.pk == unchanged.pk
    assert (first.status, first.number) == (InvoiceStatus.DRAFT, None)
    assert [(line["type"], line["quantity"], line["amount"]) for line in listed[0]["lines"]] == [
        ("usage", "150", {"amount": 150, "currency": "USD"}),
        ("base_fee", "1", {"amount": 4900, "currency": "USD"}),
    ]
    assert listed[0]["total"] == {"amount": 5050, "currency": "USD"}
    events = list(
        Event.objects.filter(object_id=first.public_id).values_list("type", flat=True).order_by("id")
    )
    assert events == ["invoice.created", "invoice.updated"]


def test_invoices_filter_by_customer_id_or_external_id_within_the_project(
    api, clock, customer, hybrid, other_project
):
    subscribe(customer, hybrid, starts_at=FEB_1)
    namesake = CustomerFactory(project=other_project, external_id=customer.external_id)
    subscribe(namesake, make_plan(other_project, base_fee="10"), starts_at=FEB_1)
    # Another customer whose external_id is the first one's ID: the ID wins, as in the routes.
    subscribe(
        CustomerFactory(project=customer.project, external_id=customer.public_id), hybrid, starts_at=FEB_1
    )
    close(clock, FEB_1)

    by_id = api.get(f"/v1/invoices?customer={customer.public_id}").json()["results"]
    by_external_id = api.get(f"/v1/invoices?customer={customer.external_id}").json()["results"]
    unknown = api.get("/v1/invoices?customer=nobody").json()["results"]

    assert [invoice["customer"] for invoice in by_external_id] == [customer.public_id]
    assert by_external_id == by_id
    assert unknown == []


def test_late_usage_is_billed_once_on_the_next_invoice_at_the_old_plans_price(
    api, clock, customer, hybrid, project, meter
):
    subscription = subscribe(customer, hybrid, starts_at=FEB_1)
    cheaper = make_plan(
        project, name="Lite", charges=[{"meter": meter, "name": "API calls", "unit_price": "0.001"}]
    )
    close(clock, MAR_1 + timedelta(hours=1))
    february = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE, period_start=FEB_1)
    api.patch(
        f"/v1/subscriptions/{subscription.public_id}",
        {"plan": cheaper.public_id, "change_at": "period_end"},
        format="json",
    )
    clock.move_to(datetime(2026, 3, 10, tzinfo=UTC))
    usage(api, 300, datetime(2026, 2, 20, tzinfo=UTC))  # February usage, reported in March

    draft = draft_refresh(subscription=subscription)
    draft_refresh(subscription=subscription)
    close(clock, APR_1 + timedelta(hours=1))

    march = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE, period_start=MAR_1)
    assert march.pk == draft.pk
    late = march.lines.get(type=LineType.LATE_USAGE)
    assert (late.description, late.quantity, late.amount, late.original_invoice) == (
        "API calls — late usage for 2026-02-01 – 2026-03-01",
        D(300),
        D("3.00"),
        february,
    )
    april = draft_refresh(subscription=subscription)
    assert not april.lines.filter(type=LineType.LATE_USAGE).exists()


def test_a_preview_prices_a_past_period_on_another_plan_and_saves_nothing(
    api, clock, customer, hybrid, project, meter
):
    scale = make_plan(
        project,
        name="Scale",
        base_fee="99",
        charges=[{"meter": meter, "name": "API calls", "unit_price": "0.005"}],
    )
    subscribe(customer, hybrid, starts_at=FEB_1)
    close(clock, FEB_1)  # the opening invoice: February's 49 in advance
    clock.move_to(datetime(2026, 2, 10, tzinfo=UTC))
    usage(api, 2000, datetime(2026, 2, 9, tzinfo=UTC))
    before = (Invoice.objects.count(), Event.objects.count())

    upcoming = invoice_preview(subscription=customer.subscriptions.get(), period=Period(FEB_1, MAR_1))
    what_if = invoice_preview(
        subscription=customer.subscriptions.get(), plan=scale, period=Period(FEB_1, MAR_1)
    )

    # The invoice closing February: its usage, and March's fee in advance.
    assert [(line.type, line.amount) for line in upcoming.preview_lines] == [
        (LineType.USAGE, D("20.00")),
        (LineType.BASE_FEE, D("49.00")),
    ]
    assert upcoming.total == D("69.00")
    assert what_if.total == D("109.00")  # February on Scale: 99 + 2000 × 0.005
    assert (Invoice.objects.count(), Event.objects.count()) == before


def test_a_dynamic_charge_bills_its_events_amounts_and_an_unprorated_fee_its_full_price(
    api, clock, customer, project
):
    # Given a plan with a dynamic charge (amount in each event's "cost") and a 31.00 setup-style fee
    # in arrears that is not prorated, subscribed on Jan 15 (17 of January's 31 days)
    requests = MeterFactory(project=project, code="requests", name="Requests", aggregation="sum")
    plan = make_plan(
        project,
        name="AI",
        charges=[
            {"meter": requests, "name": "Model calls", "pricing_model": "dynamic", "amount_property": "cost"},
            {
                "kind": "fixed",
                "name": "Platform",
                "unit_price": "31",
                "timing": "in_arrears",
                "prorate": False,
            },
        ],
    )
    subscribe(customer, plan, starts_at=JAN_15)
    billing_close(as_of=JAN_15)
    clock.move_to(datetime(2026, 1, 20, 10, tzinfo=UTC))
    for value, cost in ((7, 0.70), (5, 0.55), (10, 2.2)):
        body = {"customer": "acme", "meter": "requests", "value": value, "properties": {"cost": cost}}
        response = api.post("/v1/usage", {**body, "timestamp": "2026-01-20T09:00:00+00:00"}, format="json")
        assert response.status_code == 200, response.json()

    # When January closes
    close(clock, FEB_1 + timedelta(hours=1))

    # Then the usage line bills 0.70 + 0.55 + 2.20 and shows the meter's 22 units; the fee is whole
    cycle = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert lines(cycle) == [
        (LineType.FIXED_FEE, "AI — Platform", D(1), D("31.00")),
        (LineType.USAGE, "Model calls", D(22), D("3.45")),
    ]
    assert cycle.total == D("34.45")


@pytest.mark.parametrize(
    "fields",
    [
        {"free_amount": "500"},
        {"free_amount": "500", "free_units": "3"},
        {"free_amount": "250", "free_units": "1", "min_fee_per_event": "1", "max_fee_per_event": "5"},
        {"free_amount": "100"},
    ],
)
def test_the_percentage_query_applies_the_free_amount_as_the_reference_does(
    api, clock, customer, project, fields
):
    # Given a percentage charge with a free amount and events of 600, -100, 200, 50 (time order)
    volume = MeterFactory(
        project=project, code="volume", name="Volume", aggregation="sum", allow_negative=True
    )
    plan = make_plan(
        project,
        charges=[
            {"meter": volume, "pricing_model": "percentage", "percentage_rate": "1.2"}
            | {"fixed_fee_per_event": "0.10"}
            | fields
        ],
    )
    subscription = subscribe(customer, plan, starts_at=JAN_15)
    clock.move_to(datetime(2026, 1, 20, 10, tzinfo=UTC))
    values = [600, -100, 200, 50]
    for hour, value in enumerate(values):
        usage(api, value, datetime(2026, 1, 20, hour, tzinfo=UTC), meter="volume")
    charge = plan.charges.get()

    # When the SQL aggregates the period
    totals = percentage_usage(
        meter=volume, subscription=subscription, start=JAN_15, end=FEB_1, pricing=Pricing.from_item(charge)
    )

    # Then its fees are the reference's, to the last place
    reference = rate_percentage_events(Pricing.from_item(charge), [D(v) for v in values], currency="USD")
    assert (totals.events, totals.total_value, totals.fees) == (4, D(750), reference.exact_amount)


def test_a_bucketed_max_meter_bills_the_summed_hourly_peaks(api, clock, customer, project):
    # Flexprice's bucketed MAX example (https://docs.flexprice.io/docs/product-catalogue/features/
    # aggregation/max): peaks of 8 GB and 10 GB in two hours are 18 GB, where a plain max would be 10.
    peak = MeterFactory(project=project, code="peak_gb", name="Peak GB", aggregation="max", bucket="hour")
    plan = make_plan(
        project,
        name="Compute",
        charges=[{"meter": peak, "name": "Peak GB", "pricing_model": "per_unit", "unit_price": "2"}],
    )
    subscribe(customer, plan, starts_at=JAN_15)
    billing_close(as_of=JAN_15)
    clock.move_to(datetime(2026, 1, 20, 10, tzinfo=UTC))
    seven = datetime(2026, 1, 20, 7, tzinfo=UTC)
    for value, minutes in ((8, 5), (4, 40), (10, 61), (5, 90), (9, 119)):
        usage(api, value, seven + timedelta(minutes=minutes), meter="peak_gb")

    close(clock, FEB_1 + timedelta(hours=1))

    invoice = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert lines(invoice) == [(LineType.USAGE, "Peak GB", D(18), D("36.00"))]
    assert invoice.total == D("36.00")
