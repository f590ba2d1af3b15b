import django_filters
from django.core.validators import EMPTY_VALUES
from django.db.models import Q


class CreatedFilterSet(django_filters.FilterSet):
    """`created_after` / `created_before` (ISO 8601, half-open: after ≤ created < before)."""

    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")


class ArchivedFilterSet(CreatedFilterSet):
    """Lists show objects in use; `?archived=true` lists the archived ones instead."""

    archived = django_filters.BooleanFilter(
        method="filter_archived", help_text="true: only archived (default false)."
    )

    def filter_archived(self, queryset, name, value):
        return queryset  # applied in filter_queryset, which also sees the parameter's absence

    def filter_queryset(self, queryset):
        archived = bool(self.form.cleaned_data.get("archived"))
        return super().filter_queryset(queryset).filter(archived_at__isnull=not archived)


class CustomerRefFilter(django_filters.CharFilter):
    """`?customer=`: the customer's ID (`cus_…`) or your own external_id, as in the customer
    routes. `field_name` is the path to the customer (`customer`, `invoice__customer`)."""

    def __init__(self, field_name: str = "customer", **kwargs) -> None:
        kwargs.setdefault("help_text", "The customer's ID (cus_…) or your own external_id.")
        super().__init__(field_name=field_name, **kwargs)

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        return qs.filter(
            Q(**{f"{self.field_name}__public_id": value}) | Q(**{f"{self.field_name}__external_id": value})
        )
