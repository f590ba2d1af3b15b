"""Reading usage events: the body's shapes, the field aliases and per-event validation.

Plain Python on purpose: at 1,000 events a request, a DRF serializer per event would cost more
than the database. Nothing here touches the database; `meters.services.usage_ingest` resolves
customers and meters for the whole batch afterwards.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from billing_site.api.codecs import INVALID_JSON_MESSAGE, parse_json
from billing_site.api.json_values import text_problem
from billing_site.moments import MomentError, moment_parse
from billing_site.money import decimal_from_float
from meters.models import VALUE_DIGITS, VALUE_PLACES

MAX_EVENTS = 1000
MAX_KEY_LENGTH = 255
MAX_CUSTOMER_LENGTH = 255
MAX_METER_LENGTH = 100
MAX_SUBSCRIPTION_LENGTH = 255
MAX_PRODUCT_LENGTH = 100
MAX_PROPERTIES_BYTES = 8192
MAX_PROPERTIES_DEPTH = 5
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_INTEGER_DIGITS = VALUE_DIGITS - VALUE_PLACES
_MAX_INT = 10**MAX_INTEGER_DIGITS

# Each field under every name it is given by clients of other billing APIs (docs/usage.md, "Fields").
# Two names of one field in one event are refused (`conflicting_fields`), never one of them dropped.
CUSTOMER_FIELDS = ("customer", "customer_id", "external_customer_id", "stripeCustomerId")
PROCESSOR_CUSTOMER_FIELD = "stripeCustomerId"  # the customer's processor_customer_id
SUBSCRIPTION_FIELDS = ("subscription", "subscription_id")
METER_FIELDS = ("meter", "event_name", "meter_id")
METER_ID_FIELD = "meter_id"  # the meter's ID (mtr_…) or its code; the others: its code
PRODUCT_FIELDS = ("productId", "product_item")
VALUE_FIELDS = ("value", "units", "quantity")
TIMESTAMP_FIELDS = ("timestamp", "occurred_at")
ALIASED_FIELDS = (
    CUSTOMER_FIELDS, SUBSCRIPTION_FIELDS, METER_FIELDS, PRODUCT_FIELDS, VALUE_FIELDS, TIMESTAMP_FIELDS
)  # fmt: skip
EVENT_FIELDS = frozenset(
    {*(name for names in ALIASED_FIELDS for name in names), "properties", "idempotency_key"}
)
# A value as a decimal string; its digits are then checked against VALUE_DIGITS and VALUE_PLACES.
VALUE_TEXT_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_DECIMAL_STRING = re.compile(VALUE_TEXT_PATTERN)

# What a rejection says about the request, when it decides the status of one that stored nothing:
# the event does not have the documented shape (400), or it has, and cannot be taken (422: it
# depends on the meter, the project's settings, the clock, or a limit the schema cannot state),
# or it names a customer, meter, product or subscription that does not exist (404, for one event).
SEMANTIC_REJECTIONS = frozenset(
    {
        "value_out_of_range",
        "date_out_of_range",
        "timestamp_in_future",
        "properties_too_large",
        "property_out_of_range",
        "idempotency_key_required",
        "missing_meter",
        "ambiguous_meter",
        "missing_value",
        "value_not_integer",
        "negative_value",
        "ambiguous_customer",
        "ambiguous_subscription",
        "subscription_customer_mismatch",
        "not_priced_by_subscription",
        "meter_not_in_product",
        "product_not_metered",
    }
)
NOT_FOUND_REJECTIONS = frozenset(
    {
        "unknown_customer",
        "unknown_processor_customer",
        "unknown_meter",
        "unknown_product",
        "unknown_subscription",
    }
)
EMPTY_PROPERTIES = "{}"


class BodyError(Exception):
    """The body as a whole cannot be used: nothing in it is stored."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def events_from_body(body: bytes) -> tuple[list[Any], bool]:
    """The raw events of a request body (one event object, a list, or {"events": [...]}), and
    whether it was the one event object."""
    try:
        data = parse_json(body)
    except (ValueError, RecursionError):  # invalid JSON or UTF-8, NaN/Infinity, absurd nesting
        raise BodyError(400, "invalid_json", INVALID_JSON_MESSAGE) from None
    if isinstance(data, dict) and "events" in data:
        others = sorted(set(data) - {"events"})
        if others:
            raise BodyError(400, "unknown_field", f"Unknown field '{others[0]}' beside events.")
        data = data["events"]
        if not isinstance(data, list):
            raise BodyError(400, "invalid_body", '"events" must be a list of events.')
    elif isinstance(data, dict):
        return [data], True
    elif not isinstance(data, list):
        raise BodyError(400, "invalid_body", 'Send an event object, a list of events, or {"events": [...]}.')
    if not data:
        raise BodyError(400, "no_events", "The request contains no events.")
    if len(data) > MAX_EVENTS:
        raise BodyError(
            413, "too_many_events", f"At most {MAX_EVENTS} events per request; this one has {len(data)}."
        )
    return data, False


@dataclass(slots=True)
class ParsedEvent:
    index: int
    customer: str | None  # as sent; None when only the subscription names the customer
    customer_param: str
    by_processor_id: bool  # customer is the processor's customer ID (stripeCustomerId)
    subscription: str | None  # ID or external_reference; None: matched among the customer's
    subscription_param: str
    meter: str | None  # None: the product's meter, or inferred from the subscriptions
    meter_param: str
    meter_by_id: bool  # meter may be the meter's ID as well as its code (meter_id)
    product: str | None  # code or ID
    product_param: str
    value: Decimal | None  # None: not sent (1 for a meter that counts events)
    value_param: str
    is_whole: bool
    timestamp: datetime  # aware, UTC
    properties: str  # serialized JSON object
    idempotency_key: str | None


@dataclass(slots=True)
class Rejection:
    index: int
    code: str
    message: str
    param: str


def _is_clean_text(text: str) -> bool:
    """No NUL (PostgreSQL text refuses it) and no lone surrogates (not encodable as UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(raw: Any, max_length: int) -> str | None:
    if type(raw) is str and 0 < len(raw) <= max_length and _is_clean_text(raw):
        return raw
    return None


def parse_value(raw: Any) -> tuple[Decimal, bool] | tuple[None, str]:
    """A JSON number or decimal string → (Decimal, is whole number), or (None, error code)."""
    kind = type(raw)
    if kind is int:
        if -_MAX_INT < raw < _MAX_INT:
            return Decimal(raw), True
        return None, "value_out_of_range"
    if kind is float:
        if raw != raw or raw in (float("inf"), float("-inf")):
            return None, "invalid_value"
        value = decimal_from_float(raw, places=VALUE_PLACES, integer_digits=MAX_INTEGER_DIGITS)
    elif kind is str and _DECIMAL_STRING.fullmatch(raw):
        try:
            value = Decimal(raw)
        except InvalidOperation:  # an exponent beyond what Decimal can hold ("1E99999999999999999999")
            return None, "value_out_of_range"
    else:
        return None, "invalid_value"
    # Digits and exponent without trailing zeros, read from the tuple: Decimal arithmetic would
    # round to the context's precision first.
    _, digits, exponent = value.as_tuple()
    length = len(digits)
    while length > 1 and digits[length - 1] == 0 and exponent < 0:
        length -= 1
        exponent += 1
    if digits == (0,) or not any(digits):
        return Decimal(0), True
    if -exponent > VALUE_PLACES or length + exponent > MAX_INTEGER_DIGITS:
        return None, "value_out_of_range"
    return value, exponent >= 0


def _properties_too_deep(value: Any, depth: int) -> bool:
    """Whether `value`, at nesting level `depth` (the properties object is level 1), is an object or
    list nested deeper than MAX_PROPERTIES_DEPTH, or holds one."""
    if type(value) is dict:
        children = value.values()
    elif type(value) is list:
        children = value
    else:
        return False
    return depth > MAX_PROPERTIES_DEPTH or any(_properties_too_deep(child, depth + 1) for child in children)


# What serialize_properties answers instead of the JSON text when it cannot store the properties.
UNSTORABLE = "unstorable"  # NUL or a lone surrogate in a key or a value
TOO_LARGE = "too_large"  # nested too deep, or too many bytes
OUT_OF_RANGE = "out_of_range"  # a top-level number a meter could aggregate, |number| ≥ 10^20


def serialize_properties(raw: dict | None) -> str:
    """The properties (an object, or None for none) as stored JSON, or UNSTORABLE, TOO_LARGE or
    OUT_OF_RANGE. A meter may sum any top-level number, so those keep to the bound of a value:
    sums then stay far inside what rating and invoices can hold."""
    if not raw:
        return EMPTY_PROPERTIES
    for item in raw.values():
        kind = type(item)
        if kind in (dict, list) and _properties_too_deep(item, 2):
            return TOO_LARGE
        if kind in (int, float) and not -_MAX_INT < item < _MAX_INT:
            return OUT_OF_RANGE
    try:
        text = orjson.dumps(raw)
    except (orjson.JSONEncodeError, TypeError):  # lone surrogates, or an integer beyond 64 bits
        if text_problem(raw) is not None:
            return UNSTORABLE
        text = json.dumps(raw, ensure_ascii=False, separators=(",", ":")).encode()
    # orjson writes non-finite floats as null; the parsers above never produce them.
    if b"\\u0000" in text:
        return UNSTORABLE
    if len(text) > MAX_PROPERTIES_BYTES:
        return TOO_LARGE
    return text.decode()


_PROPERTIES_REFUSED = {
    UNSTORABLE: ("invalid_properties", "properties may not hold NUL or lone surrogate characters."),
    TOO_LARGE: (
        "properties_too_large",
        f"properties must be nested at most {MAX_PROPERTIES_DEPTH} levels deep and be at most "
        f"{MAX_PROPERTIES_BYTES} bytes serialized.",
    ),
    OUT_OF_RANGE: (
        "property_out_of_range",
        f"A number at the top of properties must be within ±10^{MAX_INTEGER_DIGITS}, as a value.",
    ),
}


def _one_of(event: dict, names: tuple[str, ...], at: str, index: int) -> tuple[str, Any] | Rejection:
    """The field given under one of its names (None when absent or null), or a rejection when
    the event gives it twice, null or not: neither may be dropped in silence."""
    given = [name for name in names if name in event]
    if len(given) > 1:
        return Rejection(
            index,
            "conflicting_fields",
            f"{' and '.join(given)} name the same field; send one.",
            f"{at}.{given[1]}",
        )
    name = given[0] if given else names[0]
    return name, event.get(name)


def _text_field(
    event: dict, names: tuple[str, ...], *, at: str, index: int, code: str, max_length: int, nullable: bool
) -> tuple[str, str | None] | Rejection:
    """A text field under one of its names: (the name given, or the first; the text, or None when
    absent or, if `nullable`, null), or a rejection."""
    named = _one_of(event, names, at, index)
    if type(named) is Rejection:
        return named
    name, text = named
    if (text is not None or (name in event and not nullable)) and _text(text, max_length) is None:
        return Rejection(index, code, f"{name} is a string of 1 to {max_length} characters.", f"{at}.{name}")
    return name, text


def parse_event(index: int, raw: Any, *, now: datetime, require_key: bool) -> ParsedEvent | Rejection:
    """Validate one event's shape and values. Checks that need the catalog come later."""
    at = f"events[{index}]"
    if type(raw) is not dict:
        return Rejection(index, "invalid_event", "Each event is a JSON object.", at)
    unknown = [name for name in raw if name not in EVENT_FIELDS]
    if unknown:
        listed = ", ".join(f"'{name}'" for name in unknown)
        return Rejection(
            index,
            "unknown_field",
            f"Unknown field{'s' if len(unknown) > 1 else ''} {listed}: send your own data in properties.",
            f"{at}.{unknown[0]}",
        )

    # The customer and the subscription are never null: an event names one or both, explicitly.
    named = _text_field(
        raw, CUSTOMER_FIELDS, at=at, index=index, code="invalid_customer",
        max_length=MAX_CUSTOMER_LENGTH, nullable=False,
    )  # fmt: skip
    if type(named) is Rejection:
        return named
    customer_name, customer = named
    named = _text_field(
        raw, SUBSCRIPTION_FIELDS, at=at, index=index, code="invalid_subscription",
        max_length=MAX_SUBSCRIPTION_LENGTH, nullable=False,
    )  # fmt: skip
    if type(named) is Rejection:
        return named
    subscription_name, subscription = named
    if customer is None and subscription is None:
        return Rejection(
            index,
            "missing_customer",
            "customer (your external ID) is required, unless subscription names the subscription.",
            f"{at}.customer",
        )
    named = _text_field(
        raw, METER_FIELDS, at=at, index=index, code="invalid_meter",
        max_length=MAX_METER_LENGTH, nullable=True,
    )  # fmt: skip
    if type(named) is Rejection:
        return named
    meter_name, meter = named
    named = _text_field(
        raw, PRODUCT_FIELDS, at=at, index=index, code="invalid_product",
        max_length=MAX_PRODUCT_LENGTH, nullable=True,
    )  # fmt: skip
    if type(named) is Rejection:
        return named
    product_name, product = named

    named = _one_of(raw, VALUE_FIELDS, at, index)
    if type(named) is Rejection:
        return named
    value_name, raw_value = named
    value, outcome = None, False
    if value_name in raw:  # absent: decided by the meter
        value, outcome = parse_value(raw_value)
        if value is None:
            message = (
                f"{value_name} must be within ±10^{MAX_INTEGER_DIGITS}, "
                f"with at most {VALUE_PLACES} decimal places in a decimal string."
                if outcome == "value_out_of_range"
                else f"{value_name} must be a number or a decimal string."
            )
            return Rejection(index, outcome, message, f"{at}.{value_name}")

    named = _one_of(raw, TIMESTAMP_FIELDS, at, index)
    if type(named) is Rejection:
        return named
    timestamp_name, raw_timestamp = named
    if raw_timestamp is None:
        timestamp = now
    else:
        try:
            timestamp = moment_parse(raw_timestamp)
        except MomentError as error:
            code = "invalid_timestamp" if error.code == "invalid_datetime" else error.code
            return Rejection(index, code, f"{timestamp_name}: {error.message}", f"{at}.{timestamp_name}")
        if timestamp > now + FUTURE_TOLERANCE:
            return Rejection(
                index,
                "timestamp_in_future",
                f"{timestamp_name} is more than 5 minutes in the future.",
                f"{at}.{timestamp_name}",
            )

    raw_properties = raw.get("properties")
    if raw_properties is not None and type(raw_properties) is not dict:
        return Rejection(index, "invalid_properties", "properties must be a JSON object.", f"{at}.properties")
    properties = serialize_properties(raw_properties)
    if properties in _PROPERTIES_REFUSED:
        code, message = _PROPERTIES_REFUSED[properties]
        return Rejection(index, code, message, f"{at}.properties")

    key = raw.get("idempotency_key")
    if key is None:
        if require_key:
            return Rejection(
                index,
                "idempotency_key_required",
                "This project requires an idempotency_key on every event.",
                f"{at}.idempotency_key",
            )
    elif _text(key, MAX_KEY_LENGTH) is None:
        return Rejection(
            index,
            "invalid_idempotency_key",
            f"idempotency_key is a string of 1 to {MAX_KEY_LENGTH} characters.",
            f"{at}.idempotency_key",
        )

    return ParsedEvent(
        index=index,
        customer=customer,
        customer_param=f"{at}.{customer_name}",
        by_processor_id=customer_name == PROCESSOR_CUSTOMER_FIELD,
        subscription=subscription,
        subscription_param=f"{at}.{subscription_name}",
        meter=meter,
        meter_param=f"{at}.{meter_name}",
        meter_by_id=meter_name == METER_ID_FIELD,
        product=product,
        product_param=f"{at}.{product_name}",
        value=value,
        value_param=f"{at}.{value_name}",
        is_whole=outcome,
        timestamp=timestamp,
        properties=properties,
        idempotency_key=key,
    )
