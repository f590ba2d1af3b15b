"""Money rules in one place (DESIGN §7).

Amounts are `Decimal` end to end. They are rounded once, half-up, to the currency's minor unit,
using CLDR's currency data through babel rather than a hand-written table (0-decimal JPY,
3-decimal KWD, …). The API shows amounts as integer minor units beside the currency code.
"""

import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies


@lru_cache(maxsize=1)
def _tender_currencies() -> frozenset[str]:
    today = datetime.datetime.now(tz=datetime.UTC).date()
    codes: set[str] = set()
    for territory in get_global("territory_currencies"):
        codes.update(get_territory_currencies(territory, start_date=today, tender=True))
    return frozenset(codes)


def is_currency(code: str) -> bool:
    """True for an ISO 4217 code that is legal tender somewhere today (upper case only).

    Withdrawn codes such as DEM or HRK are refused: nobody can be invoiced in them.
    """
    return code in _tender_currencies()


@lru_cache(maxsize=512)
def minor_unit_exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit: USD 2, JPY 0, KWD 3."""
    return get_currency_precision(currency)


def round_money(amount: Decimal | int, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit. Call once per line, never on a total."""
    return Decimal(amount).quantize(Decimal(1).scaleb(-minor_unit_exponent(currency)), rounding=ROUND_HALF_UP)


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
