import django_filters


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
