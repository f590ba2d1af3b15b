"""django-q2 entry points for payments (scheduled in billing_site/schedules.py)."""

from django.utils import timezone

from payments.collection import payment_collect, payments_retry
from payments.payouts import balance_settle


def collect_payment(payment_id: int) -> str:
    """After an invoice is issued: charge its customer's default payment method."""
    return payment_collect(payment_id=payment_id).status


def retry_payments() -> int:
    summary = payments_retry(now=timezone.now())
    return summary.retried + summary.recovered


def settle_balance() -> int:
    return len(balance_settle(now=timezone.now()).payouts)
