from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured

from billing_site.ids import new_public_id
from billing_site.money import from_minor_units, is_currency, round_money, to_minor_units
from billing_site.settings import env_bool, env_int, env_list, env_str


@pytest.mark.parametrize(
    ("amount", "currency", "rounded", "minor"),
    [
        ("12.345", "USD", "12.35", 1235),  # half-up, not banker's
        ("12.344999", "USD", "12.34", 1234),
        ("0.005", "EUR", "0.01", 1),
        ("1234.5", "JPY", "1235", 1235),  # 0 decimals
        ("1.2345", "KWD", "1.235", 1235),  # 3 decimals
        ("-2.345", "USD", "-2.35", -235),  # half away from zero for credits
    ],
)
def test_rounding_is_half_up_to_the_minor_unit(amount, currency, rounded, minor):
    assert round_money(Decimal(amount), currency) == Decimal(rounded)
    assert to_minor_units(round_money(Decimal(amount), currency), currency) == minor
    assert from_minor_units(minor, currency) == Decimal(rounded)


def test_minor_units_refuse_unrounded_amounts():
    with pytest.raises(ValueError, match="not rounded"):
        to_minor_units(Decimal("1.005"), "USD")


@pytest.mark.parametrize(("code", "valid"), [("USD", True), ("EUR", True), ("JPY", True), ("KWD", True),
                                             ("usd", False), ("DEM", False), ("HRK", False), ("XXX", False),
                                             ("US", False), ("", False)])  # fmt: skip
def test_currency_codes_in_use(code, valid):
    assert is_currency(code) is valid


def test_public_ids_are_prefixed_fixed_length_unique_and_time_ordered():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        earlier = [new_public_id("cus") for _ in range(1000)]
    with time_machine.travel(start + timedelta(milliseconds=1), tick=False):
        later = [new_public_id("cus") for _ in range(1000)]

    assert all(i.startswith("cus_") and len(i) == 26 for i in earlier + later)
    assert len(set(earlier + later)) == 2000
    assert max(earlier) < min(later)


def test_env_helpers(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_LIST", "a, b,,c")

    assert env_bool("X_BOOL", False) is True
    assert env_bool("X_UNSET", True) is True
    assert env_int("X_INT", 0) == 42
    assert env_list("X_LIST", []) == ["a", "b", "c"]


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_variable_means_the_default(monkeypatch, blank):
    monkeypatch.setenv("X_BLANK", blank)

    assert env_str("X_BLANK", "sqlite:///default") == "sqlite:///default"
    assert env_bool("X_BLANK", True) is True
    assert env_int("X_BLANK", 7) == 7
    assert env_list("X_BLANK", ["localhost"]) == ["localhost"]


@pytest.mark.parametrize(("helper", "value"), [(env_bool, "maybe"), (env_int, "4x")])
def test_env_helpers_refuse_nonsense(monkeypatch, helper, value):
    monkeypatch.setenv("X_BAD", value)

    with pytest.raises(ImproperlyConfigured, match="X_BAD"):
        helper("X_BAD", 0)
