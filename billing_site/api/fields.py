from collections.abc import Callable, Mapping
from datetime import datetime
from operator import attrgetter
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from billing_site.errors import Unprocessable
from billing_site.moments import RANGE_TEXT, MomentError, moment_parse
from billing_site.money import currencies, decimal_string, decimal_text_pattern, to_minor_units
from billing_site.validators import countries, pattern_regex, timezones


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.0025", "nullable": True})
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

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            for text in (field, getattr(field, "child", None)):
                if isinstance(text, serializers.CharField):
                    text.trim_whitespace = False
        return fields

    def to_internal_value(self, data):
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
        found = self.get_queryset().filter(public_id=data).first()
        if found is None:
            # The ID has the documented shape, a string, and names nothing: 422, not 400.
            raise Unprocessable(
                f"No such {self.model._meta.verbose_name}: '{data}'.", code="not_found", param=self.field_name
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


# --- inputs whose OpenAPI schema is exactly what they accept -----------------------------------


MOMENT_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "example": "2024-07-15T11:30:00Z",
    "description": f"ISO 8601; an offset is converted to UTC, none means UTC; {RANGE_TEXT} (else 422).",
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


def text_problem(value: Any, path: tuple = ()) -> tuple[tuple, str] | None:
    """The first string (or object key) in a JSON value that cannot be stored, as (path, message):
    NUL, which PostgreSQL's text and jsonb refuse, and lone surrogates, which are not Unicode
    text. Every JSON-valued field of the API checks its value with this before anything else."""
    if isinstance(value, str):
        if "\x00" in value:
            return path, "Text may not contain NUL (U+0000) characters."
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return path, "Text may not contain lone surrogate characters (U+D800 to U+DFFF)."
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = text_problem(key, path) or text_problem(item, (*path, key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = text_problem(item, (*path, index))
            if found:
                return found
    return None


def nested_error(path, detail: ErrorDetail) -> serializers.ValidationError:
    """An error for the value at `path` inside a field (keys and list indexes), nested the way
    the envelope's `param` is built from (`filters[0].operator`, `metadata.plan`)."""
    nested: Any = [detail]
    for part in reversed(list(path)):
        nested = {part: nested}
    return serializers.ValidationError(nested)


# jsonschema keyword → the API's error code (the same codes DRF's own fields use where it has them).
_SCHEMA_CODES = {
    "type": "invalid_type",
    "enum": "invalid_choice",
    "const": "invalid_choice",
    "required": "required",
    "additionalProperties": "unknown_field",
    "maxLength": "max_length",
    "minLength": "min_length",
    "maxItems": "max_items",
    "minItems": "min_items",
    "uniqueItems": "duplicate_item",
    "maxProperties": "max_properties",
    "minProperties": "min_properties",
    "propertyNames": "invalid_key",
    "pattern": "invalid_format",
    "minimum": "min_value",
    "exclusiveMinimum": "min_value",
    "maximum": "max_value",
    "exclusiveMaximum": "max_value",
}


_SCHEMA_MESSAGES = {
    "required": lambda rule: "This field is required.",
    "additionalProperties": lambda rule: "Unknown field.",
    "maxLength": lambda rule: f"At most {rule} characters.",
    "minLength": lambda rule: f"At least {rule} character{'s' if rule != 1 else ''}.",
    "maxItems": lambda rule: f"At most {rule} items.",
    "minItems": lambda rule: f"At least {rule} item{'s' if rule != 1 else ''}.",
    "uniqueItems": lambda rule: "Items must not repeat.",
    "maxProperties": lambda rule: f"At most {rule} keys.",
    "minProperties": lambda rule: f"At least {rule} key{'s' if rule != 1 else ''}.",
    "propertyNames": lambda rule: "A key is not acceptable here.",
    "pattern": lambda rule: "Not in the expected format.",
    "minimum": lambda rule: f"Must be at least {rule}.",
    "exclusiveMinimum": lambda rule: f"Must be more than {rule}.",
    "maximum": lambda rule: f"Must be at most {rule}.",
    "exclusiveMaximum": lambda rule: f"Must be less than {rule}.",
    "type": lambda rule: f"Must be of type {rule if isinstance(rule, str) else ' or '.join(rule)}.",
    "enum": lambda rule: (
        "Must be one of: " + ", ".join(map(str, rule[:20])) + ("." if len(rule) <= 20 else ", …")
    ),
    "const": lambda rule: f"Must be {rule}.",
}


def _schema_message(error) -> str:
    """A short message for a schema violation; never the (possibly huge) value itself."""
    message = _SCHEMA_MESSAGES.get(error.validator)
    return message(error.validator_value) if message else "Not an accepted value here."


def _pattern(validator, pattern, instance, schema):
    """JSON Schema's `pattern` as OpenAPI readers apply it (ECMA-262): `$` ends the text. Python's
    `$` also matches before a final newline, which would let "5\n" through "^[0-9]+$"."""
    if validator.is_type(instance, "string") and not pattern_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# The 2020-12 validator, with `pattern` as above.
_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def _relevance(error):
    """Which error best_match reports: a field's own error before "matches none of the shapes"
    (oneOf/anyOf), then the shallowest."""
    return (error.validator not in ("anyOf", "oneOf"), -len(error.path))


class SchemaJSONField(serializers.Field):
    """A JSON value (object, list, …) validated against the JSON Schema the OpenAPI document shows
    for it (OpenAPI 3.1 schemas are JSON Schema 2020-12), so the two cannot disagree."""

    def __init__(self, *, schema: dict[str, Any], **kwargs) -> None:
        self.json_schema = schema
        self.validator = _Validator(schema)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        problem = text_problem(data)
        if problem is not None:
            path, message = problem
            raise nested_error(path, ErrorDetail(message, code="invalid_characters"))
        error = best_match(self.validator.iter_errors(data), key=_relevance)
        if error is None:
            return data
        code, message = _SCHEMA_CODES.get(error.validator, "invalid"), _schema_message(error)
        node = error
        while node is not None:  # a schema may name its own code: the innermost one that does wins
            if isinstance(node.schema, dict) and "x-error-code" in node.schema:
                code = node.schema["x-error-code"]
                message = node.schema.get("x-error-message", message)
                error = node
                break
            node = node.parent
        path = list(error.absolute_path)
        if error.validator in ("required", "additionalProperties") and isinstance(error.instance, dict):
            declared = error.schema.get("properties", {})
            names = (
                [name for name in error.validator_value if name not in error.instance]
                if error.validator == "required"
                else sorted(name for name in error.instance if name not in declared)
            )
            path += names[:1]
        raise nested_error(path, ErrorDetail(message, code=code))

    def to_representation(self, value):
        return value


class SchemaJSONFieldExtension(OpenApiSerializerFieldExtension):
    target_class = SchemaJSONField

    def map_serializer_field(self, auto_schema, direction):
        return self.target.json_schema


def decimal_schema(
    *,
    integer_digits: int,
    places: int,
    signed: bool = False,
    maximum: int | None = None,
    nullable: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A decimal as JSON accepts it: a number, or a decimal string (exact); null too if nullable.
    What a number becomes is billing_site.money.decimal_from_json's rule, which the API applies."""
    limit = maximum if maximum is not None else 10**integer_digits
    number: dict[str, Any] = {"type": "number"}
    number.update({"exclusiveMinimum": -(10**integer_digits)} if signed else {"minimum": 0})
    number.update({"maximum": maximum} if maximum is not None else {"exclusiveMaximum": limit})
    pattern = decimal_text_pattern(integer_digits=integer_digits, places=places, signed=signed)
    string = {"type": "string", "pattern": pattern}
    kinds = [number, string, {"type": "null"}] if nullable else [number, string]
    bound = f"at most {maximum}" if maximum is not None else f"below 10^{integer_digits}"
    message = (
        f"A {'' if signed else 'non-negative '}number {bound}, or a decimal string of at most "
        f"{integer_digits} digits before the point and {places} after{' (or null)' if nullable else ''}."
    )
    return {"oneOf": kinds, "x-error-code": "invalid_decimal", "x-error-message": message, **extra}


METADATA_SCHEMA = {
    "type": "object",
    "description": "Your own key-value pairs: at most 50 keys of 1 to 40 characters, each value a "
    "string of at most 500 characters.",
    "maxProperties": 50,
    "propertyNames": {"minLength": 1, "maxLength": 40},
    "additionalProperties": {"type": "string", "maxLength": 500},
    "example": {"crm_id": "A-1042"},
}


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


class CountryField(CodeChoiceField):
    """An ISO 3166 alpha-2 country code, upper case."""

    choices_list = countries
    code = "invalid_country"
    message = "{data!r} is not an ISO 3166 country code, upper case (e.g. US, DE)."
