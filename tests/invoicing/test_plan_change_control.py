"""Plan changes under control: effective_at (now, period end, a past moment of the current period)
and proration_behavior (create_prorations, none, always_invoice), billed to the cent."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django_q.conf import Conf

from invoicing.billing import billing_close
from invoicing.models import BillingReason, Invoice, InvoiceStatus, LineType
from invoicing.tasks import invoice_prorations
from subscriptions.models import Subscription
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe

pytestmark = pytest.mark.django_db

D = Decimal
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
FEB_15 = datetime(2026, 2, 15, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(FEB_1, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _tasks_inline(monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def meter(project):
    return MeterFactory(project=project, code="api_calls", name="API calls")


@pytest.fixture
def plans(project, meter):
    pro = make_plan(
        project,
        code="pro",
        name="Pro",
        base_fee="56",
        charges=[{"meter": meter, "name": "API calls", "unit_price": "0.01"}],
    )
    scale = make_plan(
        project, code="scale", name="Scale", base_fee="112",
        charges=[{"meter": meter, "name": "API calls", "unit_price": "0.005"}],
    )  # fmt: skip
    return pro, scale


@pytest.fixture
def subscription(project, plans, clock):
    subscription = subscribe(
        CustomerFactory(project=project, external_id="acme", timezone="UTC"), plans[0], starts_at=FEB_1
    )
    billing_close(as_of=FEB_1)  # the opening invoice: February's 56 in advance
    return subscription


def _usage(api, value, at):
    body = {"customer": "acme", "meter": "api_calls", "value": value, "timestamp": at.isoformat()}
    assert api.post("/v1/usage", body, format="json").status_code == 200


def _change(api, subscription, plan, **fields):
    return api.patch(
        f"/v1/subscriptions/{subscription.public_id}", {"plan": plan.public_id, **fields}, format="json"
    )


def _close_february(clock):
    clock.move_to(MAR_1 + timedelta(hours=2))
    billing_close(as_of=MAR_1 + timedelta(hours=2))
    return Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE, period_start=FEB_1)


def _lines(invoice):
    return [(line.type, line.description, line.amount) for line in invoice.lines.order_by("position")]


def test_a_change_backdated_within_the_period_rates_usage_from_that_moment(api, clock, subscription, plans):
    clock.move_to(datetime(2026, 2, 20, tzinfo=UTC))
    _usage(api, 1000, datetime(2026, 2, 10, tzinfo=UTC))
    _usage(api, 1000, datetime(2026, 2, 18, tzinfo=UTC))

    response = _change(api, subscription, plans[1], effective_at="2026-02-15T00:00:00Z")

    assert response.status_code == 200, response.json()
    assert [phase["starts_at"] for phase in response.json()["phases"]] == [
        "2026-02-01T00:00:00Z",
        "2026-02-15T00:00:00Z",
    ]
    assert _lines(_close_february(clock)) == [
        (LineType.CREDIT, "Pro — base fee: unused time (proration)", D("-28.00")),  # 14 of 28 days
        (LineType.BASE_FEE, "Scale — base fee: added time (proration)", D("56.00")),
        (LineType.USAGE, "API calls", D("10.00")),  # 10 February, on Pro
        (LineType.USAGE, "API calls", D("5.00")),  # 18 February, on Scale
        (LineType.BASE_FEE, "Scale — base fee", D("112.00")),  # March in advance
    ]


def test_effective_at_outside_the_current_period_or_in_the_future_is_refused(api, clock, subscription, plans):
    clock.move_to(datetime(2026, 2, 20, tzinfo=UTC))
    cases = {
        "2026-01-31T00:00:00Z": "effective_at_in_closed_period",
        "2026-02-21T00:00:00Z": "effective_at_in_future",
        "yesterday": "invalid_datetime",
    }
    for moment, code in cases.items():
        response = _change(api, subscription, plans[1], effective_at=moment)
        assert (response.status_code, response.json()["error"]["code"]) == (
            400 if code == "invalid_datetime" else 422,
            code,
        ), moment
    assert Subscription.objects.get(pk=subscription.pk).phases.count() == 1
    alone = api.patch(
        f"/v1/subscriptions/{subscription.public_id}", {"proration_behavior": "none"}, format="json"
    )
    assert (alone.status_code, alone.json()["error"]["code"]) == (422, "plan_required")


def test_a_change_cannot_go_back_past_another(api, clock, subscription, plans, project):
    clock.move_to(datetime(2026, 2, 10, tzinfo=UTC))
    assert _change(api, subscription, plans[1]).status_code == 200
    clock.move_to(datetime(2026, 2, 20, tzinfo=UTC))

    response = _change(api, subscription, plans[0], effective_at="2026-02-05T00:00:00Z")

    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "effective_at_before_last_change",
    )


def test_without_proration_the_old_fee_holds_to_the_period_end(api, clock, subscription, plans):
    clock.move_to(FEB_15)
    assert _change(api, subscription, plans[1], proration_behavior="none").status_code == 200
    clock.move_to(datetime(2026, 2, 20, tzinfo=UTC))
    _usage(api, 1000, datetime(2026, 2, 19, tzinfo=UTC))

    assert _lines(_close_february(clock)) == [
        (LineType.USAGE, "API calls", D("0.00")),  # on Pro, before the change
        (LineType.USAGE, "API calls", D("5.00")),  # usage after the change is on Scale
        (LineType.BASE_FEE, "Scale — base fee", D("112.00")),  # Scale's fee from March
    ]


def test_always_invoice_bills_the_proration_at_once_and_the_cycle_does_not_again(
    api, clock, subscription, plans, django_capture_on_commit_callbacks
):
    clock.move_to(FEB_15)

    with django_capture_on_commit_callbacks(execute=True):
        response = _change(api, subscription, plans[1], proration_behavior="always_invoice")
    with django_capture_on_commit_callbacks(execute=True):  # the task is safe to run twice
        invoice_prorations(subscription.pk, FEB_15.isoformat())

    assert response.status_code == 200

    update = Invoice.objects.get(billing_reason=BillingReason.SUBSCRIPTION_UPDATE)
    assert (update.status, update.number, update.total) == (InvoiceStatus.OPEN, "ACME-000002", D("28.00"))
    assert _lines(update) == [
        (LineType.CREDIT, "Pro — base fee: unused time (proration)", D("-28.00")),
        (LineType.BASE_FEE, "Scale — base fee: added time (proration)", D("56.00")),
    ]
    assert _lines(_close_february(clock)) == [
        (LineType.USAGE, "API calls", D("0.00")),
        (LineType.USAGE, "API calls", D("0.00")),
        (LineType.BASE_FEE, "Scale — base fee", D("112.00")),
    ]


def test_a_change_at_period_end_then_now_replaces_the_scheduled_one(api, clock, subscription, plans, project):
    third = make_plan(project, code="team", name="Team", base_fee="28")
    clock.move_to(FEB_15)
    assert _change(api, subscription, plans[1], effective_at="period_end").status_code == 200

    response = _change(api, subscription, third)

    assert response.status_code == 200, response.json()
    assert [(p["plan"], p["starts_at"], p["ends_at"]) for p in response.json()["phases"]] == [
        (plans[0].public_id, "2026-02-01T00:00:00Z", "2026-02-15T00:00:00Z"),
        (third.public_id, "2026-02-15T00:00:00Z", None),
    ]


def test_change_at_is_still_taken_as_effective_at(api, clock, subscription, plans):
    clock.move_to(FEB_15)
    both = _change(api, subscription, plans[1], change_at="now", effective_at="now")
    older = _change(api, subscription, plans[1], change_at="period_end")

    assert (both.status_code, both.json()["error"]["code"]) == (400, "conflicting_fields")
    assert older.status_code == 200
    assert older.json()["pending_plan_change"] == {
        "plan": plans[1].public_id,
        "effective_at": "2026-03-01T00:00:00Z",
    }
