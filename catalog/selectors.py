from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from accounts.models import Project
from catalog.models import Charge, Contract, Customer, Plan, Product


def plan_in_use(plan: Plan) -> bool:
    """Whether any subscription has (had, or will have) this plan version."""
    from subscriptions.models import SubscriptionPhase

    return SubscriptionPhase.objects.filter(plan=plan).exists()


def product_list(*, project: Project) -> QuerySet[Product]:
    return Product.objects.filter(project=project)


def plan_list(*, project: Project) -> QuerySet[Plan]:
    """Plans with their charges, annotated with whether a newer version replaced them."""
    newer = Plan.objects.filter(previous_version=OuterRef("pk"))
    return (
        Plan.objects.filter(project=project)
        .select_related("product")
        .prefetch_related(
            "tax_rates",
            Prefetch(
                "charges", queryset=Charge.objects.select_related("meter").prefetch_related("tax_rates")
            ),
        )
        .annotate(superseded=Exists(newer))
    )


def customer_list(*, project: Project) -> QuerySet[Customer]:
    return Customer.objects.filter(project=project).prefetch_related("tax_rates")


def plan_by_reference(*, project: Project, reference: str) -> Plan | None:
    """A plan version by its ID (`plan_…`) or, failing that, the latest version of the plan with
    that `code` (what other billing APIs call the plan's id)."""
    found = Plan.objects.filter(project=project, public_id=reference).first()
    if found is None:
        found = Plan.objects.filter(project=project, code=reference).order_by("-version").first()
    return found


def contract_list(*, project: Project) -> QuerySet[Contract]:
    return Contract.objects.filter(project=project).select_related("customer", "plan", "subscription")


def customer_by_reference(*, project: Project, reference: str) -> Customer | None:
    """A customer by its ID (`cus_…`) or, failing that, by your own `external_id`: usage events and
    client code know customers by the latter."""
    matches = list(
        customer_list(project=project).filter(Q(public_id=reference) | Q(external_id=reference))[:2]
    )
    return next((c for c in matches if c.public_id == reference), matches[0] if matches else None)


# The customer's admin page shows this many of the latest rows of each thing they are billed
# (subscriptions, invoices, credit notes, payments: each app's selectors read theirs).
CUSTOMER_PAGE_ROWS = 20
