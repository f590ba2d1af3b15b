"""A start in the past: one catch-up invoice, or nothing before now; and no close of the future."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command

from billing_site.errors import Unprocessable
from invoicing.billing import billing_close
from invoicing.models import BillingReason, Invoice, LineType
from subscriptions.models import Subscription
from tests.accounts.factories import ProjectFactory
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def plan(project):
    meter = MeterFactory(project=project, code="mtr_compute", name="Compute")
    return make_plan(
        project, code="plan_usage_plus", name="Usage Plus", base_fee="99",
        charges=[{"meter": meter, "name": "Compute", "unit_price": "0.01"}],
    )  # fmt: skip


@pytest.fixture
def customer(project):
    return CustomerFactory(project=project, external_id="cust_456", timezone="UTC")


def _usage(api, value, at):
    body = {"customer": "cust_456", "meter": "mtr_compute", "value": value, "timestamp": at.isoformat()}
    assert api.post("/v1/usage", body, format="json").status_code == 200


def test_usageboxs_backdated_example_bills_one_catch_up_invoice(api, project, plan, customer):
    # UsageBox's literal request body: the customer and plan by the ids the client knows them by.
    response = api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_456", "plan_id": "plan_usage_plus", "starts_at": "2024-05-01",
         "external_reference": "crm-789"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["customer"], body["plan"], body["external_reference"]) == (
        customer.public_id,
        plan.public_id,
        "crm-789",
    )
    assert body["catch_up_period"] == {"start": "2024-05-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    assert body["current_period"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    _usage(api, 150, datetime(2024, 5, 1, 12, tzinfo=UTC))

    run = billing_close(as_of=NOW)

    [invoice] = Invoice.objects.filter(subscription__public_id=body["id"])
    assert (run.closed.opened, run.closed.periods_closed) == (1, 0)
    assert (invoice.billing_reason, invoice.period_start, invoice.period_end) == (
        BillingReason.SUBSCRIPTION_START,
        datetime(2024, 5, 1, tzinfo=UTC),
        NOV_1,
    )
    lines = [(line.type, line.description, line.amount) for line in invoice.lines.order_by("position")]
    assert len(lines) == 30 * 2 + 1  # each past month's fee and usage, then November's fee
    assert lines[:3] == [
        (LineType.BASE_FEE, "Usage Plus — base fee (2024-05-01 – 2024-06-01)", D("99.00")),
        (LineType.USAGE, "Compute (2024-05-01 – 2024-06-01)", D("1.50")),
        (LineType.BASE_FEE, "Usage Plus — base fee (2024-06-01 – 2024-07-01)", D("99.00")),
    ]
    assert lines[-1] == (LineType.BASE_FEE, "Usage Plus — base fee", D("99.00"))
    assert invoice.total == D("3070.50")  # 31 × 99 + 150 × 0.01
    assert invoice.number == "ACME-000001"


def test_the_period_after_a_catch_up_bills_on_and_late_usage_of_a_caught_up_month_follows(
    api, project, plan, customer, clock
):
    subscription = subscribe(customer, plan, starts_at=datetime(2024, 5, 1, tzinfo=UTC), backdate=True)
    billing_close(as_of=NOW)
    _usage(api, 300, datetime(2024, 6, 10, tzinfo=UTC))  # after the catch-up was issued

    clock.move_to(DEC_1 + timedelta(hours=2))
    billing_close(as_of=DEC_1 + timedelta(hours=2))

    november = Invoice.objects.get(subscription=subscription, billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert [(line.type, line.description, line.amount) for line in november.lines.order_by("position")] == [
        (LineType.USAGE, "Compute", D("0.00")),
        (LineType.LATE_USAGE, "Compute — late usage for 2024-06-01 – 2024-07-01", D("3.00")),
        (LineType.BASE_FEE, "Usage Plus — base fee", D("99.00")),  # December in advance
    ]
    assert Invoice.objects.filter(subscription=subscription).count() == 2


def test_a_partial_first_month_is_prorated_on_the_catch_up(project, plan, customer):
    subscription = subscribe(customer, plan, starts_at=datetime(2026, 9, 15, tzinfo=UTC), backdate=True)
    billing_close(as_of=NOW)

    invoice = Invoice.objects.get(subscription=subscription)
    fees = list(
        invoice.lines.filter(type=LineType.BASE_FEE).order_by("position").values_list("amount", flat=True)
    )
    assert fees == [D("52.80"), D("99.00"), D("99.00")]  # 99 × 16/30 for September, October, November


def test_bill_past_periods_none_bills_nothing_before_now(api, project, plan, customer):
    _usage(api, 500, datetime(2026, 11, 20, tzinfo=UTC))  # before the subscription is created
    response = api.post(
        "/v1/subscriptions",
        {"customer": "cust_456", "plan": "plan_usage_plus", "starts_at": "2024-05-01",
         "bill_past_periods": "none"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    assert response.json()["catch_up_period"] is None
    assert response.json()["billed_from"] == "2026-11-30T12:00:00Z"

    billing_close(as_of=NOW)

    subscription = Subscription.objects.get(public_id=response.json()["id"])
    opening = Invoice.objects.get(subscription=subscription)
    assert [(line.type, line.amount) for line in opening.lines.all()] == [
        (LineType.BASE_FEE, D("1.65"))  # 99 × 12 h / 30 days: from now to the end of November
    ]
    with time_machine.travel(DEC_1 + timedelta(hours=2), tick=False):
        billing_close(as_of=DEC_1 + timedelta(hours=2))
    november = Invoice.objects.get(subscription=subscription, billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    usage_line = november.lines.get(type=LineType.USAGE)
    assert (usage_line.quantity, usage_line.amount) == (
        D(0),
        D("0.00"),
    )  # the 20 November usage is before now


def test_a_life_wholly_in_the_past_is_billed_once_and_ends(project, plan, customer):
    subscription = subscribe(
        customer, plan, starts_at=datetime(2026, 6, 1, tzinfo=UTC), ends_at=datetime(2026, 8, 16, tzinfo=UTC),
        backdate=True,
    )  # fmt: skip
    billing_close(as_of=NOW)
    billing_close(as_of=NOW)

    [invoice] = Invoice.objects.filter(subscription=subscription)
    assert list(invoice.lines.filter(type=LineType.BASE_FEE).values_list("amount", flat=True)) == [
        D("99.00"), D("99.00"), D("47.90"),  # June, July, 15 of 31 days of August
    ]  # fmt: skip
    subscription.refresh_from_db()
    assert subscription.current_period_start == subscription.current_period_end == subscription.ends_at


def test_a_close_of_the_future_is_refused_on_a_real_project_and_changes_nothing(project, plan, customer):
    subscribe(customer, plan, starts_at=NOW)
    future = datetime(2027, 8, 1, tzinfo=UTC)

    with pytest.raises(Unprocessable) as refused:
        billing_close(as_of=future)
    with pytest.raises(CommandError, match="is in the future: closing as of it would issue invoices"):
        call_command("close_billing_periods", "--as-of", "2027-08-01T00:00:00Z", stdout=StringIO())

    assert refused.value.code == "as_of_in_future"
    assert not Invoice.objects.exists()
    billing_close(as_of=NOW + timedelta(minutes=4))  # within the clock-skew allowance
    assert Invoice.objects.count() == 1


def test_a_sandbox_project_may_rehearse_a_future_close(project, plan, customer):
    sandbox = ProjectFactory(name="Demo", sandbox=True)
    sandbox_plan = make_plan(sandbox, base_fee="10")
    subscription = subscribe(CustomerFactory(project=sandbox, timezone="UTC"), sandbox_plan, starts_at=NOW)
    out = StringIO()

    call_command(
        "close_billing_periods", "--as-of", "2027-01-01T02:00:00Z", "--project", sandbox.public_id, stdout=out
    )

    assert "periods closed 2, opening invoices 1" in out.getvalue()
    assert Invoice.objects.filter(subscription=subscription).count() == 3
    with pytest.raises(Unprocessable):  # the whole-installation run still includes the real project
        billing_close(as_of=datetime(2027, 1, 1, 2, tzinfo=UTC))


def test_each_caught_up_period_is_held_to_the_plans_commitment(project, customer):
    # Given a 30.00 plan committed to 100.00 a month, started on 15 September, created on 30 November
    plan = make_plan(project, name="Scale", base_fee="30", minimum_commitment="100")
    subscription = subscribe(customer, plan, starts_at=datetime(2026, 9, 15, tzinfo=UTC), backdate=True)
    billing_close(as_of=NOW)

    # Then September (16 of its 30 days) is held to 53.33 and October to 100.00, each with a true-up
    invoice = Invoice.objects.get(subscription=subscription)
    commitments = invoice.lines.filter(type=LineType.COMMITMENT).order_by("position")
    assert [(line.unit_price, line.amount) for line in commitments] == [
        (D("53.33"), D("37.33")),  # 53.33 - 16.00 of fee
        (D("100.00"), D("70.00")),
    ]


def test_late_usage_of_a_caught_up_month_adjusts_that_months_true_up(api, clock, project, customer):
    # Given September and October caught up to a 100.00 commitment (30.00 fee + 70.00 each)
    calls = MeterFactory(project=project, code="calls", name="Calls", aggregation="count")
    plan = make_plan(
        project,
        name="Scale",
        base_fee="30",
        minimum_commitment="100",
        charges=[{"meter": calls, "name": "Calls", "unit_price": "0.10"}],
    )
    subscription = subscribe(customer, plan, starts_at=datetime(2026, 9, 1, tzinfo=UTC), backdate=True)
    billing_close(as_of=NOW)

    # When 100 October calls arrive late and November closes
    clock.move_to(NOW + timedelta(hours=1))
    october = datetime(2026, 10, 15, tzinfo=UTC)
    body = [{"customer": "cust_456", "meter": "calls", "timestamp": october.isoformat()} for _ in range(100)]
    assert api.post("/v1/usage", body, format="json").status_code == 200
    clock.move_to(DEC_1 + timedelta(hours=1))
    billing_close(as_of=DEC_1 + timedelta(hours=1))

    # Then November's invoice bills October's 10.00 and takes 10.00 off October's true-up only
    november = Invoice.objects.get(subscription=subscription, billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    late = [
        (line.type, line.description, line.amount)
        for line in november.lines.order_by("position")
        if line.original_invoice_id
    ]
    assert late == [
        (LineType.LATE_USAGE, "Calls — late usage for 2026-10-01 – 2026-11-01", D("10.00")),
        (
            LineType.COMMITMENT,
            "Scale — minimum commitment for 2026-10-01 – 2026-11-01, with its late usage",
            D("-10.00"),
        ),
    ]
