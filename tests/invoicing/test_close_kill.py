"""A real crash: `close_billing_periods` killed with SIGKILL halfway, then run again, ends exactly
as one clean run would (PostgreSQL: the command runs in its own process against the test database)."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from invoicing.billing import billing_close
from invoicing.models import BillingReason, Invoice, InvoiceStatus
from subscriptions.models import Subscription
from tests.catalog.factories import CustomerFactory, make_plan, subscribe
from tests.conftest import shared_database_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parents[2]
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)
SUBSCRIPTIONS = 80


def _cycle_invoices():
    return Invoice.objects.filter(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)


def test_a_close_killed_halfway_then_rerun_equals_one_clean_run(project):
    plan = make_plan(project, base_fee="10")
    for _ in range(SUBSCRIPTIONS):
        subscribe(CustomerFactory(project=project), plan, starts_at=JAN_1)
    billing_close(as_of=JAN_1 + timedelta(minutes=1))  # the opening invoices: numbers 1–80
    command = [sys.executable, "manage.py", "close_billing_periods", "--as-of", "2026-02-01T01:00:00Z"]
    env = {**os.environ, "DATABASE_URL": shared_database_url()}

    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        command, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _cycle_invoices().count() < 5:
        assert process.poll() is None, "the close ended before it could be killed"
        assert time.monotonic() < deadline, "the close made no progress"
        time.sleep(0.01)
    process.kill()
    process.wait()
    billed_before_the_rerun = _cycle_invoices().count()
    rerun = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True)  # noqa: S603

    assert 5 <= billed_before_the_rerun < SUBSCRIPTIONS
    assert rerun.returncode == 0, rerun.stderr
    cycle = _cycle_invoices()
    assert cycle.count() == SUBSCRIPTIONS
    assert set(cycle.values_list("status", "total", "period_start", "period_end")) == {
        (InvoiceStatus.OPEN, Decimal("10.0000"), JAN_1, FEB_1)
    }
    assert sorted(int(number.rsplit("-", 1)[1]) for number in cycle.values_list("number", flat=True)) == list(
        range(SUBSCRIPTIONS + 1, 2 * SUBSCRIPTIONS + 1)
    )
    assert set(Subscription.objects.values_list("current_period_start", "current_period_end")) == {
        (FEB_1, MAR_1)
    }
    assert Invoice.objects.count() == 2 * SUBSCRIPTIONS
