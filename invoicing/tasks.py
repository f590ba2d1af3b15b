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
from invoicing.credits import credits_expire
from invoicing.documents import document_for
from invoicing.drafts import draft_freshen
from invoicing.emails import invoice_email_send, invoice_emails_due
from invoicing.models import EmailStatus, Invoice
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


def deliver_invoice(invoice_id: int) -> None:
    """After an invoice is issued: render and keep its PDF, then send its email. Each step is
    idempotent, so a rerun after a crash between them sends exactly once (invoicing.emails)."""
    invoice = Invoice.objects.select_related("project", "customer").get(pk=invoice_id)
    document_for(invoice=invoice)
    for email_id in invoice.emails.filter(status=EmailStatus.QUEUED).values_list("pk", flat=True):
        invoice_email_send(email_id=email_id)


def send_invoice_email(email_id: int) -> None:
    invoice_email_send(email_id=email_id)


def send_due_invoice_emails() -> int:
    """Every minute: retries that are due, first sends whose task was lost, abandoned claims."""
    sent = [invoice_email_send(email_id=pk) for pk in invoice_emails_due(now=timezone.now())]
    return sum(email is not None for email in sent)


def expire_credits() -> int:
    """Write off prepaid credits past their expiry (idempotent: each expiry is entered once)."""
    return credits_expire(now=timezone.now()).expired
