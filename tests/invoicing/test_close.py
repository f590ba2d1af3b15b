"""The period close: idempotent, overlapping-safe, crash-safe, gap-free numbering, one failure isolated."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from invoicing import billing
from invoicing.billing import billing_close
from invoicing.models import BillingReason, Invoice, InvoiceStatus
from subscriptions.models import Subscription
from tests.catalog.factories import CustomerFactory, make_plan, subscribe

pytestmark = pytest.mark.django_db

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
MAY_1 = datetime(2026, 5, 1, 1, tzinfo=UTC)


def _subscriptions(project, count=3, base_fee="10"):
    plan = make_plan(project, base_fee=base_fee)
    return [subscribe(CustomerFactory(project=project), plan, starts_at=JAN_1) for _ in range(count)]


def _numbers(project):
    return sorted(
        Invoice.objects.filter(project=project).exclude(number=None).values_list("number", flat=True)
    )


@time_machine.travel(MAY_1, tick=False)
def test_several_overdue_periods_close_in_order_and_a_second_run_does_nothing(project):
    [subscription] = _subscriptions(project, count=1)

    first = billing_close(as_of=MAY_1)
    second = billing_close(as_of=MAY_1)

    cycles = Invoice.objects.filter(billing_reason=BillingReason.SUBSCRIPTION_CYCLE).order_by("period_start")
    assert [(i.period_start.month, i.period_end.month, i.total) for i in cycles] == [
        (1, 2, Decimal("10.00")), (2, 3, Decimal("10.00")), (3, 4, Decimal("10.00")), (4, 5, Decimal("10.00")),
    ]  # fmt: skip
    assert (first.closed.periods_closed, first.closed.opened, first.closed.finalized) == (4, 1, 5)
    assert (second.closed.periods_closed, second.closed.opened, Invoice.objects.count()) == (0, 0, 5)
    assert _numbers(project) == [f"ACME-00000{n}" for n in range(1, 6)]
    subscription.refresh_from_db()
    assert subscription.current_period_start == datetime(2026, 5, 1, tzinfo=UTC)


@time_machine.travel(MAY_1, tick=False)
def test_the_grace_period_holds_the_close(project):
    project.grace_period_hours = 24
    project.save()
    _subscriptions(project, count=1)

    billing_close(as_of=datetime(2026, 2, 1, 23, tzinfo=UTC))
    assert not Invoice.objects.filter(billing_reason=BillingReason.SUBSCRIPTION_CYCLE).exists()
    billing_close(as_of=datetime(2026, 2, 2, tzinfo=UTC))
    assert Invoice.objects.filter(billing_reason=BillingReason.SUBSCRIPTION_CYCLE).count() == 1


@time_machine.travel(MAY_1, tick=False)
def test_review_holds_invoices_unnumbered_and_rejections_leave_no_gap(project, api):
    project.invoice_delivery = "review"
    project.save()
    _subscriptions(project, count=3)

    run = billing_close(as_of=datetime(2026, 2, 1, 1, tzinfo=UTC))
    held = list(Invoice.objects.filter(status=InvoiceStatus.PENDING_REVIEW).order_by("id"))
    rejected = api.post(
        f"/v1/invoices/{held[1].public_id}/reject", {"reason": "Wrong customer"}, format="json"
    )
    approved = [
        api.post(f"/v1/invoices/{invoice.public_id}/approve").json() for invoice in held if invoice != held[1]
    ]

    assert (run.closed.queued_for_review, len(held)) == (6, 6)
    assert (rejected.json()["status"], rejected.json()["number"], rejected.json()["void_reason"]) == (
        "void",
        None,
        "Wrong customer",
    )
    assert [invoice["number"] for invoice in approved] == [f"ACME-00000{n}" for n in range(1, 6)]
    assert {invoice["status"] for invoice in approved} == {"open"}


@time_machine.travel(MAY_1, tick=False)
def test_one_failing_subscription_does_not_stop_the_others(project, monkeypatch):
    good, bad, other = _subscriptions(project, count=3)
    real = billing.compute_lines

    def fail_for_bad(invoice, **kwargs):
        if invoice.subscription_id == bad.pk:
            raise RuntimeError("pricing exploded")
        return real(invoice, **kwargs)

    monkeypatch.setattr(billing, "compute_lines", fail_for_bad)

    run = billing_close(as_of=datetime(2026, 2, 1, 1, tzinfo=UTC))

    assert run.failed == {bad.public_id: "RuntimeError: pricing exploded"}
    assert not Invoice.objects.filter(subscription=bad).exists()
    assert Invoice.objects.filter(subscription__in=[good, other]).count() == 4


@time_machine.travel(MAY_1, tick=False)
def test_a_crash_midway_leaves_nothing_and_the_rerun_equals_one_clean_run(project, monkeypatch):
    [subscription] = _subscriptions(project, count=1)
    billing_close(as_of=datetime(2026, 1, 1, tzinfo=UTC))  # the opening invoice
    real_advance = billing._advance

    def crash(locked):
        raise SystemExit("killed")

    monkeypatch.setattr(billing, "_advance", crash)
    with pytest.raises(SystemExit):
        billing.subscription_close_periods(subscription=subscription, as_of=MAY_1, grace=timedelta(hours=1))

    assert Invoice.objects.count() == 1
    assert Subscription.objects.get().current_period_start == JAN_1
    monkeypatch.setattr(billing, "_advance", real_advance)
    billing_close(as_of=MAY_1)
    assert _numbers(project) == [f"ACME-00000{n}" for n in range(1, 6)]
    assert Invoice.objects.filter(billing_reason=BillingReason.SUBSCRIPTION_CYCLE).count() == 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@time_machine.travel(MAY_1, tick=False)
def test_overlapping_closes_bill_each_period_once_with_gap_free_numbers(project):
    _subscriptions(project, count=6)
    barrier = threading.Barrier(3)
    failures = []

    def run():
        barrier.wait()
        try:
            failures.append(billing_close(as_of=MAY_1).failed)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == [{}, {}, {}]
    assert Invoice.objects.filter(billing_reason=BillingReason.SUBSCRIPTION_CYCLE).count() == 6 * 4
    assert Invoice.objects.count() == 6 * 5
    assert _numbers(project) == sorted(f"ACME-{n:06d}" for n in range(1, 31))


@time_machine.travel(MAY_1, tick=False)
def test_the_command_reports_and_dry_run_changes_nothing(project):
    _subscriptions(project, count=2)
    out = StringIO()

    call_command("close_billing_periods", "--as-of", "2026-02-01T01:00:00Z", "--dry-run", stdout=out)
    assert Invoice.objects.count() == 0
    assert "2 subscription(s) have periods due" in out.getvalue()

    call_command(
        "close_billing_periods", "--as-of", "2026-02-01T01:00:00Z", "--project", project.public_id, stdout=out
    )
    assert (
        "periods closed 2, opening invoices 2: finalized 4, queued for review 0; skipped 0; failed 0"
        in out.getvalue()
    )

    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("close_billing_periods", "--as-of", "yesterday", stdout=out)


@time_machine.travel(MAY_1, tick=False)
def test_the_command_exits_non_zero_when_a_subscription_fails(project, monkeypatch):
    _subscriptions(project, count=1)
    monkeypatch.setattr(billing, "compute_lines", lambda invoice, **kwargs: 1 / 0)
    err = StringIO()

    with pytest.raises(SystemExit) as exit_:
        call_command(
            "close_billing_periods", "--as-of", "2026-02-01T01:00:00Z", stdout=StringIO(), stderr=err
        )

    assert exit_.value.code == 1
    assert "ZeroDivisionError: division by zero" in err.getvalue()
