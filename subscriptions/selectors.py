from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from accounts.models import Project
from catalog.models import Charge, Customer
from subscriptions.models import Status, Subscription, SubscriptionPhase, status_expression

# Subscriptions whose charges a customer is being billed for now.
BILLABLE_STATUSES = (Status.ACTIVE, Status.TRIALING)


def subscription_list(*, project: Project, now: datetime | None = None) -> QuerySet[Subscription]:
    return (
        Subscription.objects.filter(project=project)
        .select_related("customer", "plan")
        .prefetch_related(Prefetch("phases", queryset=SubscriptionPhase.objects.select_related("plan")))
        .annotate(current_status=status_expression(now))
    )


def customer_billable_items(*, customer: Customer, now: datetime | None = None) -> list[dict]:
    """What the customer's active (or trialing) subscriptions bill: each plan's base fee, fixed
    fees and metered charges, with their pricing."""
    now = now or timezone.now()
    subscriptions = (
        subscription_list(project=customer.project, now=now)
        .filter(customer=customer, current_status__in=BILLABLE_STATUSES)
        .order_by("id")
    )
    items = []
    for subscription in subscriptions:
        plan = subscription.plan
        if plan.base_fee:
            items.append({"subscription": subscription, "plan": plan, "charge": None})
        for charge in Charge.objects.filter(plan=plan).select_related("meter"):
            items.append({"subscription": subscription, "plan": plan, "charge": charge})
    return items
