import django_filters
from django import forms
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema_field

from billing_site.moments import MOMENT_PATTERN, RANGE_TEXT, MomentError, moment_parse


class MomentFormField(forms.Field):
    """A query parameter's date and time, read as every other moment the API accepts
    (billing_site.moments): converted to UTC, within the documented range."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return moment_parse(value)
        except MomentError as error:
            raise ValidationError(error.message, code=error.code) from None


@extend_schema_field(
    {
        "type": "string",
        "format": "date-time",
        "pattern": MOMENT_PATTERN,
        "description": f"ISO 8601, converted to UTC; {RANGE_TEXT}.",
    }
)
class MomentFilter(django_filters.Filter):
    field_class = MomentFormField


class StrictFilterSet(django_filters.FilterSet):
    """Filters that answer instead of guessing: a parameter given empty (`?created_after=`) is
    refused, as the schema says (an absent parameter is how to leave a filter out)."""

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name in self.filters:
            if name in self.data and "" in self.data.getlist(name):
                self.form.add_error(name, ValidationError("Leave the parameter out instead.", code="blank"))
                valid = False
        return valid


class CreatedFilterSet(StrictFilterSet):
    """`created_after` / `created_before` (ISO 8601, half-open: after ≤ created < before)."""

    created_after = MomentFilter(field_name="created_at", lookup_expr="gte")
    created_before = MomentFilter(field_name="created_at", lookup_expr="lt")


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
