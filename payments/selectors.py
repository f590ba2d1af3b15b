"""Reads of payment methods, payments and the balance."""

from django.db.models import Q, QuerySet

from catalog.models import Customer
from payments.models import PaymentMethod

# --- payment methods


def payment_method_list(*, customer: Customer) -> QuerySet[PaymentMethod]:
    """The customer's attached methods: the default first, then the most recent."""
    return PaymentMethod.objects.filter(customer=customer, detached_at__isnull=True).order_by(
        "-is_default", "-created_at", "-id"
    )


def default_payment_method(customer: Customer) -> PaymentMethod | None:
    return payment_method_list(customer=customer).filter(is_default=True).first()


def payment_method_by_reference(*, customer: Customer, reference: str) -> PaymentMethod | None:
    """One of the customer's methods, attached or detached, by our ID (`pmt_…`) or Stripe's (`pm_…`)."""
    return (
        PaymentMethod.objects.filter(customer=customer)
        .filter(Q(public_id=reference) | Q(processor_id=reference))
        .first()
    )
