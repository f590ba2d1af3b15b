from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from accounts.models import Project
from catalog.models import Charge, Customer, Plan
from catalog.selectors import CUSTOMER_PAGE_ROWS
from subscriptions.models import Status, Subscription, SubscriptionPhase, status_expression
from subscriptions.periods import Period, PeriodGrid
from subscriptions.services import period_grid

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


def subscription_phases(subscription: Subscription) -> list[SubscriptionPhase]:
    """The subscription's phases in time order: from the prefetch of a locked subscription
    (billing_subscription_locked) when there is one, else one query."""
    return list(subscription.phases.all())


def plan_at(subscription: Subscription, moment: datetime) -> Plan | None:
    """The plan of the last phase started by `moment`."""
    started = [phase for phase in subscription_phases(subscription) if phase.starts_at <= moment]
    return started[-1].plan if started else None


def nominal_period(subscription: Subscription, moment: datetime) -> Period:
    """The whole billing period containing `moment`, on the grid of the plan in effect then: fees
    are prorated against it (a first period starting on the 15th, or a last one cut by a
    cancellation, pays its share of the whole month).

    A period cut short by a plan change to another interval lies before the new grid's anchor;
    it is measured on a grid anchored at its own start.
    """
    plan = plan_at(subscription, moment) or subscription.plan
    grid = period_grid(subscription, plan)
    if moment < subscription.period_anchor:
        grid = PeriodGrid(
            anchor=moment, timezone=subscription.timezone, interval=plan.interval,
            interval_count=plan.interval_count, anniversary=grid.anniversary,
        )  # fmt: skip
    return grid.nominal_period_at(moment)


def customer_subscription_list(*, customer: Customer, limit: int = CUSTOMER_PAGE_ROWS) -> list[Subscription]:
    """The customer's subscriptions, latest first, for their admin page."""
    return list(Subscription.objects.filter(customer=customer).select_related("plan").order_by("-id")[:limit])
