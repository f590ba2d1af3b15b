"""django-q2 entry points for billing (scheduled in billing_site/schedules.py)."""

from datetime import timedelta

from django.utils import timezone

from invoicing.billing import billing_close, draft_refresh, drafts_refresh, subscription_close_periods
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
