"""Dunning runs, repeated Stripe webhooks and payouts at once, on PostgreSQL with real concurrent
connections: nothing is charged, counted or paid out twice."""

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from django_q.conf import Conf

from invoicing.models import InvoiceStatus
from payments.collection import payment_collect
from payments.models import BalanceEntry, EntryKind, Payment, PaymentStatus, Payout
from payments.payouts import balance_settle
from payments.services import payment_record
from tests.catalog.factories import CustomerFactory
from tests.concurrency import all_at_once
from tests.invoicing.factories import issued_invoice
from tests.payments.conftest import saved_card, stripe_charges, stripe_webhook
from tests.payments.test_stripe_webhooks import _intent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RUNS = 4
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture(autouse=True)
def _tasks_queued(monkeypatch):
    """Tasks stay queued (these tests commit, so a subscription's own billing task would otherwise
    run at once and issue the invoice the test issues itself); the tests run what they need."""
    monkeypatch.setattr(Conf, "SYNC", False)


def test_concurrent_dunning_runs_make_one_retry_and_one_charge(stripe_project):
    customer = CustomerFactory(project=stripe_project)
    saved_card(customer, "4000000000000341")
    with time_machine.travel(T0, tick=False):
        invoice = issued_invoice(stripe_project, total="25.00", customer=customer)
        payment_collect(payment_id=invoice.payments.get().pk)  # attempt 1: declined
    saved_card(customer)

    def retry():
        out = io.StringIO()
        call_command("retry_payments", stdout=out)
        return out.getvalue().strip()

    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        outputs = all_at_once(retry, RUNS)

    invoice.refresh_from_db()
    assert sorted(outputs) == ["retried 0, resumed 0: succeeded 0, failed 0"] * (RUNS - 1) + [
        "retried 1, resumed 0: succeeded 1, failed 0"
    ]
    assert list(invoice.payments.order_by("attempt").values_list("attempt", "status")) == [
        (1, PaymentStatus.FAILED), (2, PaymentStatus.SUCCEEDED),
    ]  # fmt: skip
    assert sorted(charge["status"] for charge in stripe_charges(customer)) == ["failed", "succeeded"]
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.PAID, 25)
    assert BalanceEntry.objects.filter(kind=EntryKind.PAYMENT).count() == 1


def test_a_stripe_event_delivered_several_times_at_once_is_handled_once(stripe_project):
    intent = _intent(stripe_project, amount=999, currency="usd")

    def deliver():
        response = stripe_webhook(
            Client(), stripe_project, "payment_intent.succeeded", intent, event_id="evt_1"
        )
        return response.status_code, response.json()["duplicate"]

    results = all_at_once(deliver, RUNS)

    assert sorted(results) == [(200, False)] + [(200, True)] * (RUNS - 1)
    assert Payment.objects.count() == 1
    assert BalanceEntry.objects.count() == 1


def test_concurrent_settle_runs_pay_out_once(project):
    with time_machine.travel(T0, tick=False):
        payment_record(invoice=issued_invoice(project, total="80.00"), amount=80, actor=None)
    later = T0 + timedelta(hours=48)

    with time_machine.travel(later, tick=False):
        counts = all_at_once(lambda: len(balance_settle(now=later).payouts), RUNS)

    assert sorted(counts) == [0] * (RUNS - 1) + [1]
    assert list(Payout.objects.values_list("amount", flat=True)) == [80]
    assert BalanceEntry.objects.filter(kind=EntryKind.PAYOUT).count() == 1
