"""Money rules in one place (DESIGN §7).

Amounts are `Decimal` end to end. They are rounded once, half-up, to the currency's minor unit,
using CLDR's currency data through babel rather than a hand-written table (0-decimal JPY,
3-decimal KWD, …). The API shows amounts as integer minor units beside the currency code.
"""

import datetime
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from functools import lru_cache

from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies


@lru_cache(maxsize=1)
def currencies() -> frozenset[str]:
    """The ISO 4217 codes that are legal tender somewhere today."""
    today = datetime.datetime.now(tz=datetime.UTC).date()
    codes: set[str] = set()
    for territory in get_global("territory_currencies"):
        codes.update(get_territory_currencies(territory, start_date=today, tender=True))
    return frozenset(codes)


def is_currency(code: str) -> bool:
    """True for an ISO 4217 code that is legal tender somewhere today (upper case only).

    Withdrawn codes such as DEM or HRK are refused: nobody can be invoiced in them.
    """
    return code in currencies()


@lru_cache(maxsize=512)
def minor_unit_exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit: USD 2, JPY 0, KWD 3."""
    return get_currency_precision(currency)


# Wide enough for any amount an invoice holds (20 digits) and what rating multiplies out, whatever
# the caller's decimal context (the default, 28 digits, fails on a 30-digit quantize).
_MONEY = Context(prec=100, rounding=ROUND_HALF_UP)


def round_money(amount: Decimal | int, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit. Call once per line, never on a total."""
    return Decimal(amount).quantize(Decimal(1).scaleb(-minor_unit_exponent(currency)), context=_MONEY)


def to_minor_units(amount: Decimal | int, currency: str) -> int:
    """An amount already rounded to the currency, as an integer of minor units (12.55 USD → 1255)."""
    rounded = round_money(amount, currency)
    if rounded != amount:
        raise ValueError(f"{amount} is not rounded to {currency}'s minor unit")
    return int(rounded.scaleb(minor_unit_exponent(currency)))


def decimal_string(value: Decimal | str | None) -> str | None:
    """A decimal as the shortest exact string: 0.002500000000 → "0.0025", 100.000 → "100"."""
    if value is None:
        return None
    text = format(Decimal(value), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


def from_minor_units(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-minor_unit_exponent(currency))


class DecimalError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decimal_text_pattern(*, integer_digits: int, places: int, signed: bool = False) -> str:
    """The decimal strings accepted: digits, an optional fraction; no exponent; a sign if signed."""
    fraction = rf"(\.[0-9]{{1,{places}}})?" if places else ""
    return rf"^{'-?' if signed else ''}[0-9]{{1,{integer_digits}}}{fraction}$"


@lru_cache(maxsize=32)
def _decimal_text(integer_digits: int, places: int, signed: bool) -> re.Pattern:
    return re.compile(decimal_text_pattern(integer_digits=integer_digits, places=places, signed=signed))


def decimal_from_float(value: float, *, places: int, integer_digits: int) -> Decimal:
    """A finite JSON number with a fraction, a binary double, as the decimal it prints as (repr),
    with digits past `places` (representation noise: 0.1 + 0.2 = 0.30000000000000004) rounded
    away, half to even. Decimal strings are exact and never go through this."""
    number = Decimal(repr(value))
    if number.as_tuple().exponent < -places and abs(value) < 10**integer_digits:
        wide = Context(prec=integer_digits + places + 2, rounding=ROUND_HALF_EVEN)
        number = number.quantize(Decimal(1).scaleb(-places), context=wide)
    return number


def decimal_from_json(
    value: object, *, integer_digits: int, places: int, signed: bool = False, maximum: Decimal | None = None
) -> Decimal:
    """A decimal sent as JSON: an integer, a number, or a decimal string (plain digits, an optional
    fraction of at most `places` digits, no exponent). A JSON number with a fraction is a binary
    double, rounded as decimal_from_float says; a decimal string is exact and is never rounded.

    The OpenAPI schema states the same rule (billing_site.api.fields.decimal_schema).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise DecimalError("invalid_decimal", "Must be a number or a decimal string.")
    if isinstance(value, str):
        if not _decimal_text(integer_digits, places, signed).fullmatch(value):
            raise DecimalError(
                "invalid_decimal",
                f"A decimal string of at most {integer_digits} digits before the point and {places} after.",
            )
        number = Decimal(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise DecimalError("invalid_decimal", "Must be a finite number.")
        number = decimal_from_float(value, places=places, integer_digits=integer_digits)
    else:
        number = Decimal(value)
        if not number.is_finite():
            raise DecimalError("invalid_decimal", "Must be a finite number.")
        if number.as_tuple().exponent < -places:
            raise DecimalError("too_many_decimal_places", f"At most {places} decimal places.")
    if number < 0 and not signed:
        raise DecimalError("negative_amount", "Must not be negative.")
    if maximum is not None and number > maximum:
        raise DecimalError("max_value", f"Must be at most {maximum}.")
    if abs(number) >= Decimal(10) ** integer_digits:
        raise DecimalError("number_too_large", f"Must be less than 10^{integer_digits}.")
    return abs(number) if number == 0 else number  # never -0
