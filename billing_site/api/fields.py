from collections.abc import Mapping
from operator import attrgetter

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from billing_site.money import decimal_string, to_minor_units


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.0025", "nullable": True})
class DecimalStringField(serializers.Field):
    """Output: an exact decimal string. Input is validated by the service (numbers or strings)."""

    def to_representation(self, value):
        return decimal_string(value)

    def to_internal_value(self, data):
        return data


class RejectUnknownFieldsMixin:
    """Refuse keys the serializer does not know (400 `unknown_field`, naming the key) instead of
    silently dropping a misspelt field. Read-only fields are accepted and ignored, so an object
    read from the API can be sent back."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [ErrorDetail("Unknown field.", code="unknown_field")] for key in unknown}
                )
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.STR)
class PublicIdRelatedField(serializers.RelatedField):
    """A related object shown, and looked up, by its public ID within the caller's project."""

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", None)
        self.model = kwargs.pop("model", None)
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context["request"]
        return self.model.objects.filter(project=request.auth.project)

    def to_representation(self, value):
        return value.public_id

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        found = self.get_queryset().filter(public_id=data).first()
        if found is None:
            raise serializers.ValidationError(
                f"No such {self.model._meta.verbose_name}: '{data}'.", code="not_found"
            )
        return found


MONEY_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": "integer", "description": "In minor units (cents; yen; fils)."},
        "currency": {"type": "string", "example": "USD"},
    },
}


@extend_schema_field(MONEY_SCHEMA)
class MoneyField(serializers.Field):
    """An amount as `{"amount": <minor units>, "currency": "USD"}`, the currency read from the
    object at `currency` (a dotted path: "currency", "invoice.currency")."""

    def __init__(self, *, currency: str = "currency", **kwargs):
        self.currency_path = currency
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return super().get_attribute(instance), attrgetter(self.currency_path)(instance)

    def to_representation(self, value):
        amount, currency = value
        return {"amount": to_minor_units(amount, currency), "currency": currency}
