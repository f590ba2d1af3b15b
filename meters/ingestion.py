"""Reading usage events: the body's shapes, the field aliases and per-event validation.

Plain Python on purpose: at 1,000 events a request, a DRF serializer per event would cost more
than the database. Nothing here touches the database; `meters.services.usage_ingest` resolves
customers and meters for the whole batch afterwards.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import orjson

from meters.models import VALUE_DIGITS, VALUE_PLACES

MAX_EVENTS = 1000
MAX_KEY_LENGTH = 255
MAX_CUSTOMER_LENGTH = 255
MAX_METER_LENGTH = 100
MAX_PROPERTIES_BYTES = 8192
MAX_PROPERTIES_DEPTH = 5
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_INTEGER_DIGITS = VALUE_DIGITS - VALUE_PLACES
_MAX_INT = 10**MAX_INTEGER_DIGITS
_PLACE = Decimal(1).scaleb(-VALUE_PLACES)
_WIDE = Context(prec=VALUE_DIGITS + 10, rounding=ROUND_HALF_EVEN)

METER_FIELDS = ("meter", "event_name")
VALUE_FIELDS = ("value", "units", "quantity")
_DECIMAL_STRING = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
EMPTY_PROPERTIES = "{}"


class BodyError(Exception):
    """The body as a whole cannot be used: nothing in it is stored."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# orjson reads integers beyond 64 bits as floats: a body with a run of 19 digits or more goes to
# the standard library's parser, which keeps them exact. (Mapping digits to "0" and searching for
# a run is ten times faster than a regular expression over a 200 kB body.)
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b"0" * 19


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a double")
    return number


def parse_json(body: bytes) -> Any:
    """orjson when it is exact, else the standard library; both refuse NaN, Infinity, numbers that
    overflow a double, invalid UTF-8 and lone surrogates (ValueError)."""
    if _LONG_RUN not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard library decides, and may accept what orjson cannot represent
    return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)


def events_from_body(body: bytes) -> list[Any]:
    """The raw events of a request body: one event object, a list, or {"events": [...]}."""
    try:
        data = parse_json(body)
    except (ValueError, RecursionError):  # invalid JSON or UTF-8, NaN/Infinity, absurd nesting
        raise BodyError(
            400, "invalid_json", "The body is not valid JSON (UTF-8, without NaN or Infinity)."
        ) from None
    if isinstance(data, dict) and "events" in data:
        data = data["events"]
        if not isinstance(data, list):
            raise BodyError(400, "invalid_body", '"events" must be a list of events.')
    elif isinstance(data, dict):
        data = [data]
    elif not isinstance(data, list):
        raise BodyError(400, "invalid_body", 'Send an event object, a list of events, or {"events": [...]}.')
    if not data:
        raise BodyError(400, "no_events", "The request contains no events.")
    if len(data) > MAX_EVENTS:
        raise BodyError(
            413, "too_many_events", f"At most {MAX_EVENTS} events per request; this one has {len(data)}."
        )
    return data


@dataclass(slots=True)
class ParsedEvent:
    index: int
    customer: str
    meter: str | None  # None: to be inferred from the customer's subscriptions
    meter_param: str
    value: Decimal
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
        # A JSON number with a fraction is a binary double: digits past the 12th decimal place are
        # representation noise (0.1 + 0.2 = 0.30000000000000004), so they are rounded away.
        # Decimal strings are exact and are never rounded.
        value = Decimal(repr(raw))
        if value.as_tuple().exponent < -VALUE_PLACES and abs(raw) < _MAX_INT:
            value = value.quantize(_PLACE, context=_WIDE)
    elif kind is str and _DECIMAL_STRING.fullmatch(raw):
        value = Decimal(raw)
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


def serialize_properties(raw: Any) -> str | None:
    """The properties as stored JSON, or None when they are not acceptable."""
    if raw is None:
        return EMPTY_PROPERTIES
    if type(raw) is not dict:
        return None
    if not raw:
        return EMPTY_PROPERTIES
    for item in raw.values():
        if type(item) in (dict, list) and _properties_too_deep(item, 2):
            return None
    try:
        text = orjson.dumps(raw)
    except (orjson.JSONEncodeError, TypeError):  # lone surrogates; only JSON types come from a body
        return None
    # orjson writes non-finite floats as null; the parsers above never produce them.
    if len(text) > MAX_PROPERTIES_BYTES or b"\\u0000" in text:
        return None
    return text.decode()


def _first_present(event: dict, names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        if name in event:
            return name, event[name]
    return names[0], None


def parse_event(index: int, raw: Any, *, now: datetime, require_key: bool) -> ParsedEvent | Rejection:
    """Validate one event's shape and values. Checks that need the meter come later."""
    at = f"events[{index}]"
    if type(raw) is not dict:
        return Rejection(index, "invalid_event", "Each event is a JSON object.", at)

    customer = raw.get("customer")
    if customer is None:
        return Rejection(
            index, "missing_customer", "customer (your external ID) is required.", f"{at}.customer"
        )
    if _text(customer, MAX_CUSTOMER_LENGTH) is None:
        return Rejection(
            index,
            "invalid_customer",
            f"customer is a string of 1 to {MAX_CUSTOMER_LENGTH} characters.",
            f"{at}.customer",
        )

    meter_name, meter = _first_present(raw, METER_FIELDS)
    if meter is not None and _text(meter, MAX_METER_LENGTH) is None:
        return Rejection(
            index,
            "invalid_meter",
            f"{meter_name} is a meter code: a string of 1 to {MAX_METER_LENGTH} characters.",
            f"{at}.{meter_name}",
        )

    value_name, raw_value = _first_present(raw, VALUE_FIELDS)
    if raw_value is None:
        return Rejection(index, "missing_value", "value (or units, quantity) is required.", f"{at}.value")
    value, outcome = parse_value(raw_value)
    if value is None:
        message = (
            f"{value_name} must be within ±10^{MAX_INTEGER_DIGITS}, "
            f"with at most {VALUE_PLACES} decimal places in a decimal string."
            if outcome == "value_out_of_range"
            else f"{value_name} must be a number or a decimal string."
        )
        return Rejection(index, outcome, message, f"{at}.{value_name}")

    raw_timestamp = raw.get("timestamp")
    if raw_timestamp is None:
        timestamp = now
    else:
        timestamp = _parse_timestamp(raw_timestamp)
        if timestamp is None:
            return Rejection(
                index,
                "invalid_timestamp",
                "timestamp must be an ISO 8601 date and time, e.g. 2024-07-15T11:30:00Z.",
                f"{at}.timestamp",
            )
        if timestamp > now + FUTURE_TOLERANCE:
            return Rejection(
                index,
                "timestamp_in_future",
                "timestamp is more than 5 minutes in the future.",
                f"{at}.timestamp",
            )

    properties = serialize_properties(raw.get("properties"))
    if properties is None:
        return Rejection(
            index,
            "invalid_properties",
            f"properties must be a JSON object nested at most {MAX_PROPERTIES_DEPTH} levels deep, "
            f"at most {MAX_PROPERTIES_BYTES} bytes serialized, without NUL characters.",
            f"{at}.properties",
        )

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
        meter=meter,
        meter_param=f"{at}.{meter_name}",
        value=value,
        value_param=f"{at}.{value_name}",
        is_whole=outcome,
        timestamp=timestamp,
        properties=properties,
        idempotency_key=key,
    )


def _parse_timestamp(raw: Any) -> datetime | None:
    if type(raw) is not str or len(raw) > 64:
        return None
    try:
        moment = datetime.fromisoformat(raw)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
