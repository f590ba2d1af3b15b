"""Unmatched events are kept, and matched (and rolled up) once what they wait for appears."""

import io
from datetime import UTC, datetime
from decimal import Decimal
from unittest import mock

import pytest
from django.core.management import call_command

from billing_site.schedules import JOBS
from catalog.services import customer_create, customer_update
from meters.models import UnmatchedReason, UsageEvent, UsageRollup
from meters.selectors import meter_quantity
from meters.services import meter_create, usage_rematch
from meters.tasks import rematch_all_usage, rematch_usage
from subscriptions.services import subscription_create
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.meters.conftest import JANUARY, NOW, at, record, stored

pytestmark = pytest.mark.django_db

FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)


def _reasons(project) -> list[str]:
    return [event.unmatched_reason for event in stored(project)]


def test_events_match_when_their_customer_and_subscription_appear(project, meter, plan):
    record(
        project,
        {"value": 5, "timestamp": at(3)},
        {"value": 7, "timestamp": at(10), "idempotency_key": "k"},
        customer="late-co", meter="api_calls",
    )  # fmt: skip
    assert _reasons(project) == [UnmatchedReason.UNKNOWN_CUSTOMER] * 2

    customer = CustomerFactory(project=project, external_id="late-co")
    first = usage_rematch(project=project, customer_external_ids=["late-co"])
    assert (first.examined, first.matched, first.changed) == (2, 0, 2)
    assert _reasons(project) == [UnmatchedReason.NO_ACTIVE_SUBSCRIPTION] * 2
    assert {event.customer_id for event in stored(project)} == {customer.pk}

    subscription = subscribe(customer, plan, starts_at=datetime(2026, 1, 5, tzinfo=UTC))
    second = usage_rematch(project=project)

    # The event from before the subscription cannot match: it is not even read again.
    assert (second.examined, second.matched, second.by_reason) == (1, 1, {})
    early, late = stored(project)
    assert early.unmatched_reason == UnmatchedReason.NO_ACTIVE_SUBSCRIPTION  # before the subscription
    assert (late.subscription, late.unmatched_reason, late.matched_at) == (subscription, "", NOW)
    assert meter_quantity(meter=meter, subscription=subscription, start=JANUARY, end=FEBRUARY) == 7
    assert UsageRollup.objects.get().value_sum == 7


def test_a_rematch_never_counts_an_event_twice(project, meter, plan):
    record(project, {"value": 3}, customer="late-co", meter="api_calls")
    subscribe(CustomerFactory(project=project, external_id="late-co"), plan, starts_at=JANUARY)

    results = [usage_rematch(project=project).matched for _ in range(3)]

    assert results == [1, 0, 0]
    assert UsageRollup.objects.get().event_count == 1


def test_events_match_when_their_meter_appears(project, customer):
    record(project, {"value": 2}, customer="cus_8fq", meter="gpu_hours")
    assert _reasons(project) == [UnmatchedReason.UNKNOWN_METER]

    gpu = MeterFactory(project=project, code="gpu_hours")
    usage_rematch(project=project, meter_codes=["gpu_hours"])
    assert _reasons(project) == [UnmatchedReason.NO_ACTIVE_SUBSCRIPTION]

    subscription = subscribe(
        customer, make_plan(project, charges=[{"meter": gpu, "unit_price": "3"}]), starts_at=JANUARY
    )
    usage_rematch(project=project)
    assert stored(project)[0].subscription == subscription


def test_a_value_the_new_meter_refuses_stays_unmatched_with_its_reason(project, customer):
    record(project, {"value": "1.5"}, {"value": 2}, customer="cus_8fq", meter="seats")
    seats = MeterFactory(project=project, code="seats", whole_numbers_only=True)
    subscribe(customer, make_plan(project, charges=[{"meter": seats, "unit_price": "1"}]), starts_at=JANUARY)

    usage_rematch(project=project)

    assert _reasons(project) == [UnmatchedReason.INVALID_VALUE, ""]


def test_rematching_skips_events_that_cannot_match_yet(project, meter, plan):
    record(project, {"value": 1}, customer="nobody", meter="api_calls")
    record(project, {"value": 1}, customer="cus_other", meter="nothing")
    CustomerFactory(project=project, external_id="cus_other")

    result = usage_rematch(project=project)

    assert result.examined == 1  # only the event whose customer now exists
    assert _reasons(project) == [UnmatchedReason.UNKNOWN_CUSTOMER, UnmatchedReason.UNKNOWN_METER]


def test_events_named_by_a_processor_id_wait_for_a_customer_carrying_it(project, meter, plan):
    record(project, {"stripeCustomerId": "cus_Q1w2E3r4", "value": 5}, meter="api_calls")
    # An external_id that happens to read the same is not what the event named.
    CustomerFactory(project=project, external_id="cus_Q1w2E3r4")
    assert usage_rematch(project=project).examined == 0

    customer = CustomerFactory(project=project, processor_customer_id="cus_Q1w2E3r4")
    subscription = subscribe(customer, plan, starts_at=JANUARY)
    result = usage_rematch(project=project, customer_external_ids=["cus_Q1w2E3r4"])

    assert (result.examined, result.matched) == (1, 1)
    [event] = stored(project)
    assert (event.customer, event.subscription, event.unmatched_reason) == (customer, subscription, "")


def test_an_event_naming_its_subscription_keeps_it(project, customer, meter, plan):
    first = subscribe(customer, plan, starts_at=JANUARY)
    second = subscribe(customer, plan, starts_at=JANUARY)
    record(project, {"subscription": second.public_id, "value": 4}, meter="api_calls")

    assert usage_rematch(project=project).examined == 0
    assert stored(project)[0].subscription == second != first


def test_matched_events_are_never_touched(project, subscription):
    record(project, {"value": 4}, customer="cus_8fq", meter="api_calls")
    before = stored(project)[0]

    assert usage_rematch(project=project).examined == 0
    assert stored(project)[0].matched_at == before.matched_at


# --- triggers, task, job, command -------------------------------------------------------------------


@pytest.fixture
def enqueued():
    with mock.patch("meters.services.async_task") as task:
        yield task


def test_creating_a_customer_meter_or_subscription_enqueues_a_rematch(
    project, plan, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        customer = customer_create(project=project, external_id="acme-1", actor=None)
        meter_create(project=project, code="new_meter", name="New", actor=None)
        subscription_create(project=project, customer=customer, plan=plan, actor=None)
        customer_update(customer=customer, changes={"name": "Renamed"}, actor=None)  # no id change: nothing
        customer_update(customer=customer, changes={"external_id": "acme-2"}, actor=None)
        customer_update(customer=customer, changes={"processor_customer_id": "cus_Q1"}, actor=None)
        customer_create(project=project, external_id="acme-3", processor_customer_id="cus_Q3", actor=None)

    assert enqueued.call_args_list == [
        mock.call(
            "meters.tasks.rematch_usage", project.pk, customer_external_ids=["acme-1"], meter_codes=None
        ),
        mock.call(
            "meters.tasks.rematch_usage", project.pk, customer_external_ids=None, meter_codes=["new_meter"]
        ),
        mock.call(
            "meters.tasks.rematch_usage", project.pk, customer_external_ids=["acme-1"], meter_codes=None
        ),
        mock.call(
            "meters.tasks.rematch_usage", project.pk, customer_external_ids=["acme-2"], meter_codes=None
        ),
        # Usage may name a customer by its processor's ID (stripeCustomerId) too.
        mock.call(
            "meters.tasks.rematch_usage", project.pk, customer_external_ids=["cus_Q1"], meter_codes=None
        ),
        mock.call(
            "meters.tasks.rematch_usage",
            project.pk,
            customer_external_ids=["acme-3", "cus_Q3"],
            meter_codes=None,
        ),
    ]


def test_nothing_is_enqueued_when_the_change_rolls_back(
    project, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        customer_create(project=project, external_id="acme-1", actor=None)

    assert len(callbacks) == 1  # runs only on commit
    enqueued.assert_not_called()


def test_the_task_and_the_minutely_job(project, other_project, meter, plan):
    record(project, {"value": 1}, customer="late-co", meter="api_calls")
    subscribe(CustomerFactory(project=project, external_id="late-co"), plan, starts_at=JANUARY)

    assert rematch_usage(project.pk, customer_external_ids=["someone-else"]) == 0
    assert rematch_all_usage() == 1
    assert "meters.tasks.rematch_all_usage" in {job.func for job in JOBS if job.minutes == 1}


def test_the_command_dry_run_changes_nothing_then_matches(project, meter, plan):
    record(project, {"value": 1}, {"value": 2}, customer="late-co", meter="api_calls")
    record(project, {"value": 1}, customer="nobody", meter="api_calls")
    subscribe(CustomerFactory(project=project, external_id="late-co"), plan, starts_at=JANUARY)
    out = io.StringIO()

    call_command("rematch_usage", "--dry-run", stdout=out)
    assert out.getvalue().strip() == (
        "Would rematch usage in 1 project(s): 2 events examined, 2 matched, 0 with a new reason; "
        "still unmatched: none."
    )
    assert UsageEvent.objects.filter(subscription__isnull=False).count() == 0
    assert UsageRollup.objects.count() == 0

    out = io.StringIO()
    call_command("rematch_usage", "--project", project.public_id, stdout=out)
    assert out.getvalue().startswith("Rematched usage in 1 project(s): 2 events examined, 2 matched")
    assert UsageEvent.objects.filter(subscription__isnull=False).count() == 2
    assert UsageRollup.objects.get().value_sum == Decimal(3)
