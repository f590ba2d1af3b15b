from billing_site.api.fields import PublicIdRelatedField
from catalog.models import Customer, Plan
from catalog.selectors import customer_by_reference, plan_by_reference


class CustomerRefField(PublicIdRelatedField):
    """A customer named in a request body by its ID (`cus_…`) or your own `external_id`, resolved
    as `?customer=` filters and the customer routes resolve it (customer_by_reference)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", "The customer's ID (cus_…) or your own external_id.")
        super().__init__(model=Customer, **kwargs)

    def find(self, reference: str) -> Customer | None:
        return customer_by_reference(project=self.context["request"].auth.project, reference=reference)


class PlanRefField(PublicIdRelatedField):
    """A plan named by its version's ID (`plan_…`) or its `code` (then: the latest version)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault(
            "help_text", "The plan version's ID (plan_…), or the plan's code for its latest version."
        )
        super().__init__(model=Plan, **kwargs)

    def find(self, reference: str) -> Plan | None:
        return plan_by_reference(project=self.context["request"].auth.project, reference=reference)
