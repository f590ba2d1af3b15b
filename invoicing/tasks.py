"""django-q2 entry points for billing (scheduled in billing_site/schedules.py)."""

from datetime import timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from invoicing.billing import (
    billing_close,
    draft_refresh,
    drafts_refresh,
    proration_invoice,
    subscription_close_periods,
)
from invoicing.drafts import draft_freshen
from subscriptions.models import Subscription


def close_billing_periods() -> int:
    return billing_close(as_of=timezone.now()).closed.periods_closed


def refresh_draft_invoices() -> int:
    return drafts_refresh().subscriptions


def bill_subscription(subscription_id: int) -> None:
    """After a subscription starts or changes: issue what is due and reprice its upcoming invoice."""
    subscription = Subscription.objects.select_related("project").get(pk=subscription_id)
    grace = timedelta(hours=subscription.project.grace_period_hours)
    subscription_close_periods(subscription=subscription, as_of=timezone.now(), grace=grace)
    draft_refresh(subscription=subscription)


def refresh_stale_drafts(subscription_ids: list[int]) -> int:
    """After usage was stored or matched (meters.staleness): recompute those drafts still stale."""
    return sum(draft_freshen(subscription_id=pk) for pk in subscription_ids)


def invoice_prorations(subscription_id: int, at: str) -> None:
    """After a plan change with proration_behavior always_invoice (subscriptions.services)."""
    proration_invoice(subscription=Subscription.objects.get(pk=subscription_id), at=parse_datetime(at))
