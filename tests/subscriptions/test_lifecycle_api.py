from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from catalog.models import Plan
from subscriptions.models import Subscription
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from webhooks.models import Event

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False) as clock:
        yield clock


@pytest.fixture
def customer(project):
    return CustomerFactory(project=project, timezone="America/New_York")


@pytest.fixture
def plan(project):
    meter = MeterFactory(project=project, code="api_calls")
    return make_plan(project, code="pro", base_fee="49", charges=[{"meter": meter, "unit_price": "0.01"}])


def _create(api, customer, plan, **fields):
    return api.post(
        "/v1/subscriptions", {"customer": customer.public_id, "plan": plan.public_id, **fields}, format="json"
    )


def _patch(api, subscription_id, **fields):
    return api.patch(f"/v1/subscriptions/{subscription_id}", fields, format="json")


def _events(subscription_id):
    return list(Event.objects.filter(object_id=subscription_id).order_by("id").values_list("type", flat=True))


def test_create_computes_the_first_period_in_the_customers_zone(api, customer, plan):
    response = _create(api, customer, plan, starts_at="2026-03-10T12:00:00Z", external_reference="crm-789")

    body = response.json()
    assert response.status_code == 201
    assert (body["status"], body["timezone"], body["billing_anchor"]) == (
        "active",
        "America/New_York",
        "calendar",
    )
    assert body["current_period"] == {"start": "2026-03-10T12:00:00Z", "end": "2026-04-01T04:00:00Z"}
    assert body["phases"] == [
        {"plan": plan.public_id, "starts_at": "2026-03-10T12:00:00Z", "ends_at": None, "paused": False}
    ]
    assert body["external_reference"] == "crm-789"
    assert _events(body["id"]) == ["subscription.created"]


def test_future_start_and_trial(api, customer, project):
    trial_plan = make_plan(project, code="trial", base_fee="10", trial_days=14)

    scheduled = _create(api, customer, trial_plan, starts_at="2026-04-01T00:00:00Z").json()
    trialing = _create(api, customer, trial_plan).json()

    assert scheduled["status"] == "scheduled"
    assert (trialing["status"], trialing["trial_ends_at"]) == ("trialing", "2026-03-24T12:00:00Z")


def test_pause_resume_keep_every_span(api, customer, plan, frozen):
    subscription = _create(api, customer, plan).json()["id"]
    frozen.shift(timedelta(days=2))
    paused = _patch(api, subscription, status="paused").json()
    frozen.shift(timedelta(days=3))
    resumed = _patch(api, subscription, status="active").json()

    assert (paused["status"], paused["paused_at"]) == ("paused", "2026-03-12T12:00:00Z")
    assert resumed["status"] == "active"
    assert [(p["starts_at"], p["ends_at"], p["paused"]) for p in resumed["phases"]] == [
        ("2026-03-10T12:00:00Z", "2026-03-12T12:00:00Z", False),
        ("2026-03-12T12:00:00Z", "2026-03-15T12:00:00Z", True),
        ("2026-03-15T12:00:00Z", None, False),
    ]
    assert _events(subscription) == ["subscription.created", "subscription.paused", "subscription.resumed"]


@pytest.mark.parametrize(
    ("first", "then", "current", "requested"),
    [
        ({"status": "active"}, None, "active", "active"),
        ({"status": "paused"}, {"status": "paused"}, "paused", "paused"),
        ({"status": "canceled"}, {"status": "paused"}, "canceled", "paused"),
        ({"status": "canceled"}, {"status": "canceled"}, "canceled", "canceled"),
        ({"status": "paused"}, {"status": "canceled", "cancel_at_period_end": True}, "paused", "canceled"),
    ],
)
def test_illegal_transitions_are_422_with_both_states_and_change_nothing(
    api, customer, plan, first, then, current, requested
):
    subscription = _create(api, customer, plan).json()["id"]
    response = _patch(api, subscription, **first)
    if then is not None:
        before = Subscription.objects.get(public_id=subscription)
        events_before = _events(subscription)
        response = _patch(api, subscription, **then)
    else:
        before, events_before = None, ["subscription.created"]

    error = response.json()["error"]
    assert response.status_code == 422
    assert (error["code"], error["current"], error["requested"]) == ("invalid_transition", current, requested)
    assert _events(subscription) == events_before
    if before is not None:
        after = Subscription.objects.get(public_id=subscription)
        assert (after.ends_at, after.paused_at, after.phases.count()) == (
            before.ends_at,
            before.paused_at,
            before.phases.count(),
        )


def test_cancel_now(api, customer, plan, frozen):
    subscription = _create(api, customer, plan).json()["id"]
    frozen.shift(timedelta(days=1))

    body = _patch(api, subscription, status="canceled").json()

    assert (body["status"], body["ends_at"], body["canceled_at"]) == (
        "canceled",
        "2026-03-11T12:00:00Z",
        "2026-03-11T12:00:00Z",
    )
    assert [(p["starts_at"], p["ends_at"]) for p in body["phases"]] == [
        ("2026-03-10T12:00:00Z", "2026-03-11T12:00:00Z")
    ]
    assert _events(subscription) == ["subscription.created", "subscription.canceled"]


def test_cancel_at_the_instant_of_the_start_leaves_no_billable_span(api, customer, plan):
    subscription = _create(api, customer, plan).json()["id"]

    body = _patch(api, subscription, status="canceled").json()

    assert (body["status"], body["phases"]) == ("canceled", [])


def test_cancel_at_period_end_and_undo(api, customer, plan, frozen):
    subscription = _create(api, customer, plan).json()["id"]

    pending = _patch(api, subscription, status="canceled", cancel_at_period_end=True).json()
    undone = _patch(api, subscription, cancel_at_period_end=False).json()
    _patch(api, subscription, status="canceled", cancel_at_period_end=True)
    frozen.move_to(datetime(2026, 4, 1, 4, 0, tzinfo=UTC))
    ended = api.get(f"/v1/subscriptions/{subscription}").json()

    assert (pending["status"], pending["ends_at"], pending["cancel_at_period_end"]) == (
        "active",
        "2026-04-01T04:00:00Z",
        True,
    )
    assert (undone["status"], undone["ends_at"], undone["cancel_at_period_end"]) == ("active", None, False)
    assert ended["status"] == "canceled"


def test_change_plan_now_splits_the_phase_for_proration(api, customer, plan, project, frozen):
    bigger = make_plan(project, code="scale", base_fee="99")
    subscription = _create(api, customer, plan).json()["id"]
    frozen.shift(timedelta(days=5))

    body = _patch(api, subscription, plan=bigger.public_id).json()

    assert body["plan"] == bigger.public_id
    assert [(p["plan"], p["starts_at"], p["ends_at"]) for p in body["phases"]] == [
        (plan.public_id, "2026-03-10T12:00:00Z", "2026-03-15T12:00:00Z"),
        (bigger.public_id, "2026-03-15T12:00:00Z", None),
    ]
    assert body["current_period"] == {"start": "2026-03-10T12:00:00Z", "end": "2026-04-01T04:00:00Z"}
    assert _events(subscription) == ["subscription.created", "subscription.updated"]


def test_change_plan_at_period_end_is_pending_until_then(api, customer, plan, project):
    bigger = make_plan(project, code="scale", base_fee="99")
    subscription = _create(api, customer, plan).json()["id"]

    body = _patch(api, subscription, plan=bigger.public_id, change_at="period_end").json()

    assert body["plan"] == plan.public_id
    assert body["pending_plan_change"] == {"plan": bigger.public_id, "effective_at": "2026-04-01T04:00:00Z"}
    assert [(p["plan"], p["starts_at"], p["ends_at"]) for p in body["phases"]] == [
        (plan.public_id, "2026-03-10T12:00:00Z", "2026-04-01T04:00:00Z"),
        (bigger.public_id, "2026-04-01T04:00:00Z", None),
    ]


def test_a_change_to_another_interval_starts_a_new_cycle(api, customer, plan, project, frozen):
    yearly = make_plan(project, code="annual", base_fee="490", interval="year")
    subscription = _create(api, customer, plan).json()["id"]
    frozen.shift(timedelta(days=5))

    body = _patch(api, subscription, plan=yearly.public_id).json()

    assert body["current_period"] == {"start": "2026-03-10T12:00:00Z", "end": "2026-03-15T12:00:00Z"}


def test_plan_change_refusals(api, customer, plan, project):
    subscription = _create(api, customer, plan).json()["id"]
    euro_plan = make_plan(project, code="eu", currency="EUR")

    same = _patch(api, subscription, plan=plan.public_id)
    currency = _patch(api, subscription, plan=euro_plan.public_id)
    two = _patch(api, subscription, plan=euro_plan.public_id, status="paused")

    assert (same.status_code, same.json()["error"]["code"]) == (422, "same_plan")
    assert (currency.status_code, currency.json()["error"]["code"]) == (422, "currency_mismatch")
    assert (two.status_code, two.json()["error"]["code"]) == (422, "one_change_per_request")


def test_price_overrides_give_the_subscription_its_own_private_plan(api, customer, plan):
    subscription = _create(api, customer, plan).json()["id"]

    body = _patch(
        api,
        subscription,
        price_overrides={
            "base_fee": "39",
            "charges": [{"meter": "api_calls", "pricing_model": "per_unit", "unit_price": "0.008"}],
        },
    ).json()

    private = Plan.objects.get(public_id=body["plan"])
    assert private.is_private
    assert private.pk != plan.pk
    assert (private.base_fee, private.charges.get().unit_price) == (Decimal("39"), Decimal("0.008"))
    assert (plan.base_fee, plan.charges.get().unit_price) == (Decimal("49"), Decimal("0.01"))
    assert [p["id"] for p in api.get("/v1/plans").json()["results"]] == [
        plan.public_id
    ]  # private plans stay out


def test_terms_change(api, customer, plan):
    subscription = _create(api, customer, plan).json()["id"]

    body = _patch(
        api, subscription, external_reference="crm-1", payment_terms_days=45, metadata={"po": "PO-7"}
    ).json()

    assert (body["external_reference"], body["payment_terms_days"], body["metadata"]) == (
        "crm-1",
        45,
        {"po": "PO-7"},
    )


def test_status_filter(api, customer, plan):
    active = subscribe(customer, plan)
    paused = subscribe(customer, plan)
    _patch(api, paused.public_id, status="paused")

    listed = api.get("/v1/subscriptions?status=paused").json()["results"]

    assert [s["id"] for s in listed] == [paused.public_id]
    assert active.public_id in [s["id"] for s in api.get("/v1/subscriptions?status=active").json()["results"]]
