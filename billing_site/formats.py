"""Money, quantities and dates as a reader of invoices expects them, in their locale (babel, CLDR).

One place for it, so the PDF, the email and the admin agree: amounts with the currency's own
number of decimals (JPY 0, USD 2, KWD 3), unit prices with as many decimals as they have (at least
the currency's), quantities without trailing zeros.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_interval
from babel.numbers import format_currency, format_decimal

from billing_site.money import round_money


def money(amount: Decimal, currency: str, locale: str) -> str:
    """An amount rounded to the currency's minor unit: "$1,234.50", "¥1,235", "KWD 1.235"."""
    return format_currency(round_money(amount, currency), currency, locale=locale, currency_digits=True)


def unit_price(amount: Decimal, currency: str, locale: str) -> str:
    """A unit price keeps every decimal it has (up to 12), and at least the currency's."""
    return format_currency(
        _normalized(amount), currency, locale=locale, currency_digits=True, decimal_quantization=False
    )


def quantity(value: Decimal, locale: str) -> str:
    """213 rather than 213.000000000000; 0.5 stays 0.5."""
    return format_decimal(_normalized(value), locale=locale, decimal_quantization=False)


def day(moment: datetime, timezone: str, locale: str) -> str:
    return format_date(moment.astimezone(ZoneInfo(timezone)).date(), format="medium", locale=locale)


def period(start: datetime, end: datetime, timezone: str, locale: str) -> str:
    """A period [start, end) as the days it covers: "Nov 1, 2026 – Nov 30, 2026" (the end is
    exclusive, so the last day shown is the one before it); a period of no length shows its day."""
    first = day(start, timezone, locale)
    if end <= start:
        return first
    last = day(end - timedelta(microseconds=1), timezone, locale)
    return first if last == first else f"{first} – {last}"


def _normalized(value: Decimal) -> Decimal:
    """Without trailing zeros, and never in exponent form (1E+3 is 1000)."""
    value = Decimal(value).normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


def compact_period(start: datetime, end: datetime, timezone: str, locale: str) -> str:
    """The same days in as few characters as the locale allows, for a table column: "Nov 1 – 30,
    2026", "Nov 1 – Dec 31, 2026"; a period of no length shows its day."""
    zone = ZoneInfo(timezone)
    first = start.astimezone(zone).date()
    if end <= start:
        return format_date(first, format="medium", locale=locale)
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    return format_interval(first, last, "yMMMd", locale=locale)
