import django_filters
from django.core.validators import EMPTY_VALUES

from catalog.selectors import customer_by_reference


class CustomerRefFilter(django_filters.CharFilter):
    """`?customer=`: the customer's ID (`cus_…`) or your own external_id, resolved as the customer
    routes resolve it (customer_by_reference: the ID first, within the caller's project).
    `field_name` is the path to the customer (`customer`, `invoice__customer`)."""

    def __init__(self, field_name: str = "customer", **kwargs) -> None:
        kwargs.setdefault("help_text", "The customer's ID (cus_…) or your own external_id.")
        super().__init__(field_name=field_name, **kwargs)

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        customer = customer_by_reference(project=self.parent.request.auth.project, reference=value)
        return qs.filter(**{self.field_name: customer}) if customer else qs.none()
