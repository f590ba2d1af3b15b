from collections.abc import Callable, Mapping
from datetime import datetime
from operator import attrgetter
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from billing_site.api.json_values import text_problem
from billing_site.errors import Unprocessable
from billing_site.moments import LOCAL_DATE_TIME_PATTERN, RANGE_TEXT, MomentError, moment_parse
from billing_site.money import currencies, decimal_string, to_minor_units
from billing_site.validators import (
    EMAIL_PATTERN,
    MAX_EMAIL_LENGTH,
    countries,
    locales,
    pattern_regex,
    timezones,
    validate_email_address,
)


@extend_schema_field({"type": ["string", "null"], "format": "decimal", "example": "0.0025"})
class DecimalStringField(serializers.Field):
    """Output: an exact decimal string. Input is validated by the service (numbers or strings)."""

    def to_representation(self, value):
        return decimal_string(value)

    def to_internal_value(self, data):
        return data


def _json_type(field: serializers.Field) -> tuple[str, Callable[[Any], bool]] | None:
    """The JSON type a field's schema states, with its test, where DRF would take other types too
    (a number for a string, "true" for a boolean, "5" for an integer)."""
    if isinstance(field, serializers.CharField | serializers.ChoiceField):
        return "string", lambda value: isinstance(value, str)
    if isinstance(field, serializers.BooleanField):
        return "boolean", lambda value: isinstance(value, bool)
    if isinstance(field, serializers.IntegerField):
        return (
            "integer",
            lambda value: (
                (isinstance(value, int) and not isinstance(value, bool))
                or (isinstance(value, float) and value.is_integer())
            ),
        )
    return None


def _type_problem(field: serializers.Field, value: Any):
    """The error for a value whose JSON type is not the one the schema states, else None."""
    if value is None:
        return None  # allow_null decides
    expected = _json_type(field)
    if expected is not None and not expected[1](value):
        return [ErrorDetail(f"Must be a JSON {expected[0]}.", code="invalid_type")]
    child = getattr(field, "child", None)
    if isinstance(field, serializers.ListField) and child is not None and isinstance(value, list):
        items = {
            index: problem for index, item in enumerate(value) if (problem := _type_problem(child, item))
        }
        return items or None
    return None


class RejectUnknownFieldsMixin:
    # Refuses keys the serializer does not take (400 `unknown_field`, naming the key) instead of
    # silently dropping a misspelt field; read-only fields are not taken either. The request
    # schema says so (`additionalProperties: false`, billing_site.api.schema.AutoSchema). A
    # comment, not a docstring: drf-spectacular would show a docstring as every body's description.
    # Text is taken as sent, not trimmed: " " meets `minLength: 1` in the schema, so the API takes
    # it too, instead of trimming it to "" and refusing it as blank.
    # `field_aliases` maps another API's name for a field to ours ({"customer_id": "customer"}):
    # either name is taken, both together are refused (400 `conflicting_fields`) rather than one
    # dropped, and the schema lists the alias and requires exactly one of the two.
    field_aliases: dict[str, str] = {}

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            for text in (field, getattr(field, "child", None)):
                if isinstance(text, serializers.CharField):
                    text.trim_whitespace = False
        return fields

    def to_internal_value(self, data):
        if isinstance(data, Mapping) and self.field_aliases:
            data = self._unaliased(data)
        if isinstance(data, Mapping):
            wrong = {
                name: problem
                for name, field in self.fields.items()
                if name in data and not field.read_only and (problem := _type_problem(field, data[name]))
            }
            if wrong:
                raise serializers.ValidationError(wrong)
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError(
                    {key: [ErrorDetail("Unknown field.", code="unknown_field")] for key in unknown}
                )
        return super().to_internal_value(data)

    def _unaliased(self, data: Mapping) -> dict:
        data = dict(data)
        for alias, name in self.field_aliases.items():
            if alias not in data:
                continue
            if name in data:
                raise serializers.ValidationError(
                    {alias: [ErrorDetail(f"{alias} and {name} name the same field; send one.",
                                         code="conflicting_fields")]}
                )  # fmt: skip
            data[name] = data.pop(alias)
        return data


@extend_schema_field({"type": "string", "minLength": 1})
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

    def run_validation(self, data=serializers.empty):
        # DRF reads "" as null for related fields (HTML forms); in JSON it is an empty string.
        if data == "":
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return super().run_validation(data)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a JSON string.", code="invalid_type")
        if text_problem(data) is not None:
            raise serializers.ValidationError(
                "Not an ID: it holds NUL or lone surrogate characters.", code="invalid"
            )
        found = self.find(data)
        if found is None:
            # The ID has the documented shape, a string, and names nothing: 422, not 400.
            raise Unprocessable(
                f"No such {self.model._meta.verbose_name}: '{data}'.", code="not_found", param=self.field_name
            )
        return found

    def find(self, reference: str):
        """The object the reference names in the caller's project, or None."""
        return self.get_queryset().filter(public_id=reference).first()


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


# --- inputs whose OpenAPI schema is exactly what they accept -----------------------------------


MOMENT_SCHEMA = {
    "type": "string",
    "anyOf": [{"format": "date-time"}, {"format": "date"}, {"pattern": LOCAL_DATE_TIME_PATTERN}],
    "example": "2024-07-15T11:30:00Z",
    "description": "An RFC 3339 date-time (converted to UTC), a date (midnight UTC), or a date and time "
    f"without an offset (UTC); {RANGE_TEXT} (else 422 date_out_of_range).",
}


def moment_or_error(value: Any, *, param: str) -> datetime:
    """billing_site.moments.moment_parse for a field of a request: an unreadable value is a shape
    error (ValidationError, 400); a readable one outside the range is Unprocessable (422)."""
    try:
        return moment_parse(value)
    except MomentError as error:
        if error.code == "date_out_of_range":
            raise Unprocessable(error.message, code=error.code, param=param) from None
        raise serializers.ValidationError(error.message, code=error.code) from None


@extend_schema_field(MOMENT_SCHEMA)
class MomentField(serializers.DateTimeField):
    """A date and time in, UTC out, within the accepted range (billing_site.moments)."""

    def to_internal_value(self, value):
        return moment_or_error(value, param=self.field_name)


@extend_schema_field({"type": "string", "maxLength": MAX_EMAIL_LENGTH, "pattern": EMAIL_PATTERN})
class EmailTextField(serializers.CharField):
    """An email address as billing_site.validators.EMAIL_PATTERN states it, or "" for none (the
    schema's other branch, which drf-spectacular adds for allow_blank)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("allow_blank", True)
        super().__init__(max_length=MAX_EMAIL_LENGTH, validators=[validate_email_address], **kwargs)


class CodeChoiceField(serializers.ChoiceField):
    """A choice from a long standard list (listed in the schema), refused with its own code."""

    choices_list: Callable[[], Any]
    code: str
    message: str

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=sorted(type(self).choices_list()), **kwargs)

    def to_internal_value(self, data):
        if data == "" and self.allow_blank:
            return ""
        if not isinstance(data, str) or data not in self.choice_strings_to_values:
            raise serializers.ValidationError(self.message.format(data=data), code=self.code)
        return data


class CurrencyField(CodeChoiceField):
    """An ISO 4217 code in use today (billing_site.money.is_currency)."""

    choices_list = currencies
    code = "invalid_currency"
    message = "{data!r} is not an ISO 4217 currency code in use, upper case (e.g. USD, EUR, JPY)."


class TimezoneField(CodeChoiceField):
    """An IANA time zone name."""

    choices_list = timezones
    code = "invalid_timezone"
    message = "{data!r} is not an IANA time zone (e.g. America/New_York)."


LOCALE_PATTERN = r"^[a-z]{2,3}(_[A-Za-z0-9]{2,8})*$"
LOCALE_TEXT = (
    "A CLDR locale: language, then territory or script (en_US, de_DE, fr_CA, zh_Hant_TW); one of that "
    "shape CLDR does not know is 422 unknown_locale."
)


@extend_schema_field(
    {"type": "string", "pattern": LOCALE_PATTERN, "example": "de_DE", "description": LOCALE_TEXT}
)
class LocaleField(serializers.CharField):
    """A CLDR locale identifier: how invoices format money and dates.

    Not an enum in the schema: CLDR has over a thousand, which a client gains nothing from seeing
    listed and a schema-driven fuzzer would try one by one. The shape is the pattern (else 400);
    a locale of that shape CLDR does not know is 422.
    """

    def to_internal_value(self, data):
        if not isinstance(data, str) or not pattern_regex(LOCALE_PATTERN).search(data):
            raise serializers.ValidationError(
                "A locale is a language code, then a territory or script: en_US, de_DE.",
                code="invalid_locale",
            )
        if data not in locales():
            raise Unprocessable(
                f"{data!r} is not a locale CLDR knows (e.g. en_US, de_DE, fr_FR, ja_JP).",
                code="unknown_locale",
                param=self.field_name,
            )
        return data


class CountryField(CodeChoiceField):
    """An ISO 3166 alpha-2 country code, upper case."""

    choices_list = countries
    code = "invalid_country"
    message = "{data!r} is not an ISO 3166 country code, upper case (e.g. US, DE)."
