"""Preview = the invoice that will be issued: over random plan changes (now, backdated, at period
end; every proration behavior), pauses, resumes, cancellations and usage, the preview of the
current period taken after the last of them equals, line for line, the invoice the close issues."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django_q.conf import Conf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_site.errors import DomainError
from invoicing.billing import invoice_preview, subscription_close_periods
from invoicing.models import BillingReason, Invoice
from meters.services import usage_ingest
from subscriptions import services
from subscriptions.models import Subscription
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe

pytestmark = pytest.mark.django_db

FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)

operation = st.one_of(
    st.tuples(st.just("usage"), st.integers(1, 5000)),
    st.tuples(
        st.just("change"),
        st.integers(0, 2),  # which plan
        st.sampled_from(["now", "period_end", "backdated"]),
        st.sampled_from(["create_prorations", "none", "always_invoice"]),
    ),
    st.tuples(st.just("pause")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("cancel"), st.booleans()),
)
steps = st.lists(st.tuples(st.integers(1, 60), operation), min_size=1, max_size=8)  # hours apart


@pytest.fixture
def catalog(project):
    meter = MeterFactory(project=project, code="api_calls", name="API calls")
    arrears = make_plan(project, code="arrears", name="Arrears", base_fee="30", base_fee_timing="in_arrears")
    return [
        make_plan(project, code="pro", name="Pro", base_fee="56",
                  charges=[{"meter": meter, "name": "Calls", "unit_price": "0.01"}]),
        make_plan(project, code="scale", name="Scale", base_fee="112",
                  charges=[{"meter": meter, "name": "Calls", "pricing_model": "graduated",
                            "tiers": [{"up_to": "1000", "unit_price": "0"}, {"up_to": None, "unit_price": "0.02"}]}]),
        arrears,
    ]  # fmt: skip


def _apply(subscription: Subscription, step: tuple, plans, now: datetime) -> None:
    kind = step[0]
    if kind == "usage":
        event = {"customer": subscription.customer.external_id, "meter": "api_calls", "value": step[1]}
        usage_ingest(project=subscription.project, events=[event])
    elif kind == "change":
        _, which, when, proration = step
        change_at = now - timedelta(hours=1) if when == "backdated" else when
        services.subscription_change_plan(
            subscription=subscription, plan=plans[which], change_at=change_at,
            proration_behavior=proration, actor=None,
        )  # fmt: skip
    elif kind == "pause":
        services.subscription_pause(subscription=subscription, actor=None)
    elif kind == "resume":
        services.subscription_resume(subscription=subscription, actor=None)
    else:
        services.subscription_cancel(subscription=subscription, at_period_end=step[1], actor=None)


def _lines(lines) -> list[tuple]:
    return [(line.type, line.description, line.quantity, line.amount) for line in lines]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # fmt: skip
@given(history=steps)
def test_the_preview_of_the_current_period_is_the_invoice_its_close_issues(
    history, project, catalog, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(Conf, "SYNC", True)  # what a change queues (prorations invoiced at once) runs
    plans = catalog
    with time_machine.travel(FEB_1, tick=False) as clock:
        subscription = subscribe(CustomerFactory(project=project, timezone="UTC"), plans[0], starts_at=FEB_1)
        subscription_close_periods(subscription=subscription, as_of=FEB_1, grace=timedelta(0))
        now = FEB_1
        for hours, step in history:
            now = min(now + timedelta(hours=hours), MAR_1 - timedelta(hours=1))
            clock.move_to(now)
            try:
                with django_capture_on_commit_callbacks(execute=True):
                    _apply(Subscription.objects.get(pk=subscription.pk), step, plans, now)
            except DomainError:
                pass  # refused (pausing a paused subscription, …): changes nothing
        subscription.refresh_from_db()
        preview = invoice_preview(subscription=subscription)

        close_at = max(subscription.current_period_end, now) + timedelta(hours=1)
        clock.move_to(close_at)
        subscription_close_periods(subscription=subscription, as_of=close_at, grace=timedelta(0))

    issued = Invoice.objects.get(
        subscription=subscription,
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
        period_start=preview.period_start,
    )
    assert issued.period_end == preview.period_end
    assert _lines(issued.lines.order_by("position")) == _lines(preview.preview_lines)
    assert issued.total == preview.total
    assert issued.total == sum((line.amount for line in preview.preview_lines), Decimal(0))
