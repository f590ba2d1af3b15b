"""The close in batches: payloads built once yet as the API shows the invoice, failures isolated
within a batch, and subscriptions held by another transaction closed once released."""

import json
import threading
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from invoicing import billing
from invoicing.billing import billing_close
from invoicing.models import BillingReason, Invoice, InvoiceStatus
from subscriptions.models import Subscription
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from webhooks.models import Event
from webhooks.payloads import payload_for

pytestmark = pytest.mark.django_db

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, 1, tzinfo=UTC)


def _as_stored(data: dict) -> dict:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _numbers(project):
    return sorted(
        Invoice.objects.filter(project=project).exclude(number=None).values_list("number", flat=True)
    )


@time_machine.travel(MAR_1, tick=False)
def test_each_issued_invoice_is_announced_as_the_api_shows_it(project):
    project.email_invoices = False  # an email queued at issue would show, after its events, as last_delivery
    project.save()
    meter = MeterFactory(project=project, code="api_calls")
    metered = make_plan(project, charges=[{"meter": meter, "unit_price": "0.01"}])  # opens at zero: paid
    flat = make_plan(project, base_fee="10")
    subscribe(CustomerFactory(project=project), metered, starts_at=JAN_1)
    subscribe(CustomerFactory(project=project), flat, starts_at=JAN_1)

    run = billing_close(as_of=MAR_1)

    assert (run.closed.opened, run.closed.periods_closed, run.failed) == (2, 4, {})
    issued = Event.objects.filter(type__in=("invoice.finalized", "invoice.paid")).order_by("id")
    assert issued.filter(type="invoice.finalized").count() == 6
    assert issued.filter(type="invoice.paid").count() == 3  # the metered plan's three zero invoices
    for event in issued:
        invoice = Invoice.objects.get(public_id=event.object_id)
        expected = _as_stored(payload_for(invoice))
        if event.type == "invoice.paid":
            expected.update(invoice=invoice.public_id, usage="0", amount=0)
        assert event.data == expected


@time_machine.travel(MAR_1, tick=False)
def test_a_failure_inside_a_batch_is_rolled_back_alone(project, monkeypatch):
    plan = make_plan(project, base_fee="10")
    subscriptions = [subscribe(CustomerFactory(project=project), plan, starts_at=JAN_1) for _ in range(5)]
    bad = subscriptions[2]
    monkeypatch.setattr(billing, "CLOSE_BATCH", 2)
    real = billing._advance

    def fail_for_bad(subscription):
        if subscription.pk == bad.pk and subscription.current_period_start.month == 2:
            raise RuntimeError("advance exploded")
        real(subscription)

    monkeypatch.setattr(billing, "_advance", fail_for_bad)

    run = billing_close(as_of=MAR_1)

    assert run.failed == {bad.public_id: "RuntimeError: advance exploded"}
    # Its opening invoice and January stand; February, the failing step, left nothing.
    assert list(
        Invoice.objects.filter(subscription=bad).order_by("id").values_list("billing_reason", "period_start")
    ) == [(BillingReason.SUBSCRIPTION_START, JAN_1), (BillingReason.SUBSCRIPTION_CYCLE, JAN_1)]
    assert Subscription.objects.get(pk=bad.pk).current_period_start == datetime(2026, 2, 1, tzinfo=UTC)
    assert Invoice.objects.exclude(subscription=bad).count() == 4 * 3
    assert _numbers(project) == [f"ACME-{n:06d}" for n in range(1, 4 * 3 + 2 + 1)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@time_machine.travel(MAR_1, tick=False)
def test_a_subscription_held_elsewhere_is_closed_once_released(project):
    plan = make_plan(project, base_fee="10")
    subscriptions = [subscribe(CustomerFactory(project=project), plan, starts_at=JAN_1) for _ in range(4)]
    held = subscriptions[1]
    locked, others_done = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                Subscription.objects.select_for_update().get(pk=held.pk)
                locked.set()
                others_done.wait(timeout=60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(timeout=60)
    progressed = []

    def progress():
        progressed.append(1)
        if len(progressed) == 3:  # every other subscription: the held one is claimed after them
            others_done.set()

    try:
        run = billing_close(as_of=MAR_1, progress=progress)
    finally:
        others_done.set()
        holder.join()

    assert (run.subscriptions, run.failed, run.closed.periods_closed) == (4, {}, 8)
    assert set(Invoice.objects.values_list("subscription_id", "status").distinct()) == {
        (subscription.pk, InvoiceStatus.OPEN) for subscription in subscriptions
    }
    assert _numbers(project) == [f"ACME-{n:06d}" for n in range(1, 13)]
