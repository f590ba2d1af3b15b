"""JSON-valued request fields (metadata, filters, charges, …), validated against the JSON Schema
the OpenAPI document shows for them, and the text rule every JSON value keeps."""

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from billing_site.money import decimal_text_pattern
from billing_site.validators import pattern_regex


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
