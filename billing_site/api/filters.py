import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django_filters.filterset import FILTER_FOR_DBFIELD_DEFAULTS
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing_site.api.fields import MOMENT_SCHEMA, moment_or_error


class MomentFormField(forms.Field):
    """A query parameter's date and time, read as every other moment the API accepts
    (billing_site.moments): converted to UTC, within the documented range (else 422)."""

    def __init__(self, *, param: str = "", **kwargs) -> None:
        self.param = param
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return moment_or_error(value, param=self.param)
        except serializers.ValidationError as error:
            raise ValidationError(str(error.detail[0]), code=error.detail[0].code) from None


@extend_schema_field(MOMENT_SCHEMA)
class MomentFilter(django_filters.Filter):
    field_class = MomentFormField


class StrictBooleanField(forms.Field):
    """`true` or `false`, as OpenAPI writes a boolean in a query; anything else is refused
    (Django's NullBooleanField reads "maybe" as no filter at all)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if value not in ("true", "false"):
            raise ValidationError("true or false.", code="invalid_boolean")
        return value == "true"


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


_FORM_CLASSES: dict[type[django_filters.FilterSet], type[forms.Form]] = {}


class StrictFilterSet(django_filters.FilterSet):
    """Filters that answer instead of guessing: a parameter given empty (`?created_after=`) is
    refused, as the schema says (`minLength: 1`; an absent parameter is how to leave a filter out),
    and so is a boolean that is not `true` or `false`."""

    FILTER_DEFAULTS = {
        **FILTER_FOR_DBFIELD_DEFAULTS,
        models.BooleanField: {"filter_class": StrictBooleanFilter},
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, declared in self.filters.items():
            if isinstance(declared, MomentFilter):
                declared.extra["param"] = name  # a 422 names the parameter

    def get_form_class(self) -> type[forms.Form]:
        # Built once per FilterSet class, not per request: its fields depend on the class's filters
        # only, and each form instance deep-copies them (Django forms copy base_fields).
        form_class = _FORM_CLASSES.get(type(self))
        if form_class is None:
            form_class = _FORM_CLASSES[type(self)] = super().get_form_class()
        return form_class

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

    archived = StrictBooleanFilter(method="filter_archived", help_text="true: only archived (default false).")

    def filter_archived(self, queryset, name, value):
        return queryset  # applied in filter_queryset, which also sees the parameter's absence

    def filter_queryset(self, queryset):
        archived = bool(self.form.cleaned_data.get("archived"))
        return super().filter_queryset(queryset).filter(archived_at__isnull=not archived)
