"""The one helper every admin page shows money, prices and quantities with (billing_site.admin_display)."""

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from billing_site.admin_display import (
    DecimalInput,
    money_column,
    money_text,
    price_text,
    quantity_column,
    quantity_text,
)
from billing_site.formats import compact_period


def record(currency: str, locale: str | None, **fields):
    return SimpleNamespace(currency=currency, project=SimpleNamespace(locale=locale), **fields)


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        ("250.0000", "USD", "en_US", "$250.00"),
        ("1234.5", "USD", "en_US", "$1,234.50"),
        ("1234.5", "EUR", "de_DE", "1.234,50\xa0€"),
        ("1234.5", "JPY", "en_US", "¥1,235"),
        ("1.2345", "KWD", "en_US", "KWD1.235"),
        ("-7.0000", "USD", "en_US", "-$7.00"),
        ("0E-12", "USD", "en_US", "$0.00"),
        ("99.0000", "USD", None, "$99.00"),  # no project locale: en_US
    ],
)
def test_money_has_its_currency_and_its_minor_unit(amount, currency, locale, expected):
    assert money_text(record(currency, locale), Decimal(amount)) == expected


def test_a_unit_price_keeps_its_decimals_and_a_quantity_loses_its_trailing_zeros():
    usd = record("USD", "en_US")
    assert price_text(usd, Decimal("49.000000000000")) == "$49.00"
    assert price_text(usd, Decimal("0.002500000000")) == "$0.0025"
    assert quantity_text(usd, Decimal("213.000000000000")) == "213"
    assert quantity_text(usd, Decimal("1234567.500000000000")) == "1,234,567.5"
    assert quantity_text(usd, Decimal("0E-12")) == "0"
    assert quantity_text(record("EUR", "de_DE"), Decimal("0.5")) == "0,5"
    assert price_text(record("EUR", "de_DE"), Decimal("0.100000000000")) == "0,10\xa0€"
    assert price_text(record("JPY", "en_US"), Decimal("0.5")) == "¥0.5"


def test_columns_follow_a_path_to_the_currency_and_the_project():
    invoice = record("EUR", "fr_FR")
    line = SimpleNamespace(invoice=invoice, amount=Decimal("1500.0000"), quantity=Decimal("3.000"))
    amount = money_column("amount", currency="invoice__currency", project="invoice__project")
    quantity = quantity_column("quantity", project="invoice__project")
    assert amount(None, line) == "1\u202f500,00\xa0€"
    assert quantity(None, line) == "3"
    assert amount.short_description == "amount"
    assert amount.admin_order_field == "amount"


def test_nothing_shows_as_a_dash():
    assert money_text(record("USD", "en_US"), None) == "-"
    assert quantity_text(record("USD", "en_US"), None) == "-"


def test_a_decimal_input_shows_the_value_as_typed():
    widget = DecimalInput()
    assert widget.format_value(Decimal("49.000000000000")) == "49"
    assert widget.format_value(Decimal("0.002000000000")) == "0.002"
    assert widget.format_value(Decimal("12.50")) == "12.5"
    assert widget.format_value("12.50") == "12.50"  # what was typed comes back as typed
    assert widget.format_value(None) is None


@pytest.mark.parametrize(
    ("start", "end", "zone", "locale", "expected"),
    [
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "UTC", "en_US", "Nov 1 – 30, 2026"),
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), "UTC", "en_US", "Nov 1 – Dec 31, 2026"),
        (datetime(2026, 12, 15, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC), "UTC", "en_US",
         "Dec 15, 2026 – Jan 14, 2027"),
        (datetime(2026, 11, 1, 5, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC), "America/New_York", "en_US",
         "Nov 1 – 30, 2026"),
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC), "UTC", "en_US", "Nov 1, 2026"),
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "UTC", "de_DE", "1.–30. Nov. 2026"),
    ],
)  # fmt: skip
def test_a_compact_period_names_the_days_it_covers(start, end, zone, locale, expected):
    assert compact_period(start, end, zone, locale).replace("\u2009", " ") == expected
