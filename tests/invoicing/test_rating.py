"""The rating engine, model by model, with exact amounts and tier breakdowns (docs/pricing.md)."""

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from catalog.models import Charge, ContractLine
from catalog.pricing import ChargeKind, FeeTiming, PackageRounding, PricingModel
from invoicing.rating import (
    Pricing,
    Tier,
    TierLine,
    invoice_total,
    percentage_event_fee,
    prorate,
    rate_dynamic,
    rate_fixed,
    rate_percentage,
    rate_percentage_events,
    rate_usage,
)
from subscriptions.periods import PeriodGrid
from tests.invoicing.factories import D, pricing, tiers

M = PricingModel

# 1–1000 at 0.10; 1001–5000 at 0.08 plus 5.00 once; above 5000 at 0.05 plus 10.00 once.
STEPPED = tiers(("1000", "0.10", "0"), ("5000", "0.08", "5.00"), (None, "0.05", "10.00"))
# Stairstep: 50.00 up to 10 units, 100.00 up to 20, 150.00 above. Unit prices are set to show they
# are ignored.
STAIRS = tiers(("10", "9.99", "50.00"), ("20", "9.99", "100.00"), (None, "9.99", "150.00"))


def line(tier: int, units: str, unit_price: str, flat_fee: str, amount: str) -> TierLine:
    return TierLine(tier, D(units), D(unit_price), D(flat_fee), D(amount))


def usd(model: PricingModel, quantity: str, **fields):
    return rate_usage(pricing(model, **fields), D(quantity), currency="USD")


# --- per unit -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "unit_price", "currency", "amount"),
    [
        ("10", "0.25", "USD", "2.50"),
        ("2.38", "0.20", "USD", "0.48"),  # fractional units (GB): 0.476
        ("5", "0.005", "USD", "0.03"),  # 0.025 rounds half-up (banker's rounding would give 0.02)
        ("1999", "0.005", "USD", "10.00"),  # 9.995
        ("1", "0.000000000001", "USD", "0.00"),  # 12-decimal unit price
        ("1000000000000", "0.000000000001", "USD", "1.00"),
        ("5", "0.5", "JPY", "3"),  # 0-decimal currency: 2.5 → 3
        ("3", "0.5", "JPY", "2"),
        ("7", "0.0005", "KWD", "0.004"),  # 3-decimal currencies: 0.0035 → 0.004
        ("1", "1.2345", "BHD", "1.235"),
        ("0", "0.25", "USD", "0.00"),
    ],
)
def test_per_unit_is_quantity_times_price_rounded_once(quantity, unit_price, currency, amount):
    rating = rate_usage(pricing(M.PER_UNIT, unit_price=unit_price), D(quantity), currency=currency)

    assert rating.amount == D(amount)
    assert str(rating.amount) == amount  # at the currency's exponent: "3" for JPY, "0.004" for KWD
    assert rating.exact_amount == D(quantity) * D(unit_price)
    assert rating.unit_price == D(unit_price)
    assert rating.tiers == ()


def test_a_huge_product_is_exact_where_the_default_28_digit_context_would_round():
    unit_price = D("1234567890123456.123456789012")  # 28 digits, 12 decimal places: the column's limit
    quantity = D("98765432109876543210.123456789")
    exact = Fraction(unit_price) * Fraction(quantity)
    assert Fraction(unit_price * quantity) != exact  # what a plain multiplication would bill

    rating = rate_usage(pricing(M.PER_UNIT, unit_price=unit_price), quantity, currency="USD")

    assert Fraction(rating.exact_amount) == exact
    assert rating.amount == D("121932631137021729491235974874089303.15")


# --- free units, zero and negative usage ----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "quantity", "billable", "amount"),
    [
        (M.PER_UNIT, {"unit_price": "0.10"}, "150", "50", "5.00"),
        (M.PER_UNIT, {"unit_price": "0.10"}, "80", "0", "0.00"),
        (M.PER_UNIT, {"unit_price": "0.10"}, "100.5", "0.5", "0.05"),
        # Tiers count from zero in the billable quantity: 1100 - 100 free = 1000, all in tier 1.
        (M.GRADUATED, {"tiers": STEPPED}, "1100", "1000", "100.00"),
        (M.VOLUME, {"tiers": STEPPED}, "1101", "1001", "85.08"),
        (M.STAIRSTEP, {"tiers": STAIRS}, "110", "10", "50.00"),
        (M.PACKAGE, {"unit_price": "5", "package_size": "100"}, "201", "101", "10.00"),
    ],
)
def test_free_units_come_off_the_quantity_before_pricing(model, fields, quantity, billable, amount):
    rating = usd(model, quantity, free_units="100", **fields)

    assert rating.quantity == D(quantity)
    assert rating.billable_quantity == D(billable)
    assert rating.amount == D(amount)


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (M.PER_UNIT, {"unit_price": "0.10"}),
        (M.GRADUATED, {"tiers": STEPPED}),
        (M.VOLUME, {"tiers": STEPPED}),
        (M.STAIRSTEP, {"tiers": STAIRS}),
        (M.PACKAGE, {"unit_price": "5", "package_size": "100"}),
    ],
)
@pytest.mark.parametrize("quantity", ["0", "-25", "-0.001"])
def test_no_billable_usage_costs_nothing_not_even_a_flat_fee_or_a_step(model, fields, quantity):
    rating = usd(model, quantity, **fields)

    assert rating.quantity == D(quantity)  # a correction stays visible on the line
    assert rating.billable_quantity == 0
    assert rating.amount == D("0.00")
    assert rating.tiers == ()
    assert not rating.minimum_applied


# --- graduated and volume -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "amount", "breakdown"),
    [
        ("1", "0.10", [line(1, "1", "0.10", "0", "0.10")]),
        ("1000", "100.00", [line(1, "1000", "0.10", "0", "100.00")]),  # up_to is inclusive
        (
            "1000.5",
            "105.04",
            [line(1, "1000", "0.10", "0", "100.00"), line(2, "0.5", "0.08", "5.00", "5.04")],
        ),
        ("1001", "105.08", [line(1, "1000", "0.10", "0", "100.00"), line(2, "1", "0.08", "5.00", "5.08")]),
        ("5000", "425.00", [line(1, "1000", "0.10", "0", "100"), line(2, "4000", "0.08", "5", "325")]),
        (
            "6000",
            "485.00",
            [
                line(1, "1000", "0.10", "0", "100"),
                line(2, "4000", "0.08", "5", "325"),
                line(3, "1000", "0.05", "10", "60"),
            ],
        ),
    ],
)
def test_graduated_prices_each_unit_in_its_tier_plus_each_reached_tiers_flat_fee(quantity, amount, breakdown):
    rating = usd(M.GRADUATED, quantity, tiers=STEPPED)

    assert rating.amount == D(amount)
    assert rating.tiers == tuple(breakdown)
    assert rating.unit_price is None


@pytest.mark.parametrize(
    ("quantity", "tier", "unit_price", "flat_fee", "exact", "amount"),
    [
        ("1", 1, "0.10", "0", "0.10", "0.10"),
        ("1000", 1, "0.10", "0", "100.00", "100.00"),
        ("1001", 2, "0.08", "5.00", "85.08", "85.08"),  # the amount FALLS when usage crosses into tier 2
        ("5000", 2, "0.08", "5.00", "405.00", "405.00"),
        ("5000.01", 3, "0.05", "10.00", "260.0005", "260.00"),
        ("6000", 3, "0.05", "10.00", "310.00", "310.00"),
    ],
)
def test_volume_prices_every_unit_at_the_tier_the_total_falls_in(
    quantity, tier, unit_price, flat_fee, exact, amount
):
    rating = usd(M.VOLUME, quantity, tiers=STEPPED)

    assert rating.amount == D(amount)
    assert rating.unit_price == D(unit_price)
    assert rating.tiers == (line(tier, quantity, unit_price, flat_fee, exact),)


def test_volume_can_cost_less_for_more_usage():
    # Documented, not a bug: Stripe's volume pricing behaves the same way (docs/pricing.md).
    assert usd(M.VOLUME, "1000", tiers=STEPPED).amount > usd(M.VOLUME, "1001", tiers=STEPPED).amount


# --- stairstep ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "amount", "tier"),
    [
        ("0.5", "50.00", 1),
        ("10", "50.00", 1),  # exactly at up_to
        ("10.001", "100.00", 2),  # just above
        ("11", "100.00", 2),
        ("20", "100.00", 2),
        ("21", "150.00", 3),
        ("1000000", "150.00", 3),
    ],
)
def test_stairstep_charges_the_flat_price_of_the_tier_the_total_falls_in(quantity, amount, tier):
    rating = usd(M.STAIRSTEP, quantity, tiers=STAIRS)

    assert rating.amount == D(amount)
    assert rating.tiers == (line(tier, quantity, "0", amount, amount),)  # unit prices ignored


# --- package --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "rounding", "packages", "amount"),
    [
        ("1", PackageRounding.UP, 1, "5.00"),
        ("1", PackageRounding.DOWN, 0, "0.00"),
        ("100", PackageRounding.UP, 1, "5.00"),
        ("100", PackageRounding.DOWN, 1, "5.00"),
        ("101", PackageRounding.UP, 2, "10.00"),
        ("101", PackageRounding.DOWN, 1, "5.00"),
        ("250.5", PackageRounding.UP, 3, "15.00"),
        ("250.5", PackageRounding.DOWN, 2, "10.00"),
    ],
)
def test_package_bills_whole_packages_rounded_up_or_down(quantity, rounding, packages, amount):
    rating = usd(M.PACKAGE, quantity, unit_price="5", package_size="100", package_rounding=rounding)

    assert (rating.packages, rating.amount, rating.unit_price) == (packages, D(amount), D(5))


def test_package_sizes_may_be_fractional():
    half_gb = {"unit_price": "0.03", "package_size": "0.5"}

    assert usd(M.PACKAGE, "1.2", **half_gb).packages == 3
    assert usd(M.PACKAGE, "1.2", package_rounding=PackageRounding.DOWN, **half_gb).packages == 2


# --- minimums -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "minimum", "currency", "amount", "applied"),
    [
        ("50", "10.00", "USD", "10.00", True),  # 5.00 computed
        ("0", "10.00", "USD", "10.00", True),  # a minimum is due even without usage
        ("100", "10.00", "USD", "10.00", False),  # equal is not raised
        ("150", "10.00", "USD", "15.00", False),
        ("99.95", "10.00", "USD", "10.00", False),  # 9.995 rounds to 10.00 first, then compares
        ("99.94", "10.00", "USD", "10.00", True),  # 9.994 → 9.99
        ("50", "9.999", "USD", "10.00", True),  # the minimum is rounded to the currency too
        ("50", "99.5", "JPY", "100", True),
        ("50", "7.0005", "KWD", "7.001", True),
    ],
)
def test_a_charge_minimum_raises_the_rounded_amount(quantity, minimum, currency, amount, applied):
    charge = pricing(M.PER_UNIT, unit_price="0.10", minimum_amount=minimum)

    rating = rate_usage(charge, D(quantity), currency=currency)

    assert (rating.amount, rating.minimum_applied) == (D(amount), applied)
    assert rating.exact_amount == D(quantity) * D("0.10")  # the computed amount stays explainable


def test_a_minimum_applies_to_tiered_and_percentage_charges_too():
    stairs = pricing(M.STAIRSTEP, tiers=STAIRS, minimum_amount="75")
    percent = pricing(M.PERCENTAGE, percentage_rate="1", minimum_amount="2.50")

    assert rate_usage(stairs, D(5), currency="USD").amount == D("75.00")
    assert rate_usage(stairs, D(15), currency="USD").amount == D("100.00")
    assert rate_percentage_events(percent, [D(100)], currency="USD").amount == D("2.50")
    assert rate_percentage_events(percent, [], currency="USD").amount == D("2.50")


# --- percentage -----------------------------------------------------------------------------------

CARD = pricing(M.PERCENTAGE, percentage_rate="2.9", fixed_fee_per_event="0.30")


@pytest.mark.parametrize(
    ("fields", "value", "fee"),
    [
        ({}, "100", "3.200"),
        ({}, "0", "0.30"),
        ({}, "0.01", "0.30029"),  # unrounded
        ({"min_fee_per_event": "0.50"}, "5", "0.50"),  # 0.445 raised to the minimum
        ({"min_fee_per_event": "0.50"}, "20", "0.880"),
        ({"max_fee_per_event": "5.00"}, "1000", "5.00"),  # 29.30 capped
        ({"max_fee_per_event": "5.00"}, "150", "4.650"),
        ({"fixed_fee_per_event": None}, "100", "2.9"),
    ],
)
def test_a_percentage_event_fee_is_rate_plus_fixed_fee_clamped(fields, value, fee):
    charge = pricing(M.PERCENTAGE, **{"percentage_rate": "2.9", "fixed_fee_per_event": "0.30", **fields})

    assert percentage_event_fee(charge, D(value)) == D(fee)


def test_percentage_free_units_are_the_first_events_which_carry_no_fee_at_all():
    charge = pricing(M.PERCENTAGE, percentage_rate="1", fixed_fee_per_event="0.10", free_units="1")

    rating = rate_percentage_events(charge, [D(10), D(20), D(30)], currency="USD")

    # 10 is free; 20 → 0.30; 30 → 0.40.
    assert rating.amount == D("0.70")
    assert (rating.quantity, rating.billable_quantity, rating.total_value) == (3, 2, D(60))
    assert rating.unit_price is None


@pytest.mark.parametrize(("free_units", "values"), [("3", ["5", "5"]), ("3", []), ("2.9", ["5", "5"])])
def test_percentage_with_no_billed_event_costs_nothing(free_units, values):
    charge = pricing(M.PERCENTAGE, percentage_rate="1", fixed_fee_per_event="0.10", free_units=free_units)

    rating = rate_percentage_events(charge, [D(value) for value in values], currency="USD")

    assert (rating.amount, rating.billable_quantity) == (D("0.00"), 0)


def test_percentage_fees_are_summed_unrounded_then_rounded_once():
    charge = pricing(M.PERCENTAGE, percentage_rate="1.5")  # 1.5 % of 0.33 is 0.00495 each

    assert rate_percentage_events(charge, [D("0.33")], currency="USD").amount == D("0.00")
    assert rate_percentage_events(charge, [D("0.33")] * 3, currency="USD").amount == D("0.01")
    assert rate_percentage_events(charge, [D("0.34")], currency="USD").amount == D("0.01")


def test_refund_events_outweighing_the_rest_bill_zero_not_a_negative_line():
    charge = pricing(M.PERCENTAGE, percentage_rate="1")

    rating = rate_percentage_events(charge, [D(100), D(-300)], currency="USD")

    assert rating.exact_amount == D(-2)
    assert (rating.amount, rating.minimum_applied) == (D("0.00"), False)


@pytest.mark.parametrize(("currency", "amount"), [("USD", "1.16"), ("JPY", "1"), ("KWD", "1.161")])
def test_rate_percentage_from_aggregates_matches_the_event_by_event_reference(currency, amount):
    values = [D(100), D("0.01"), D("12.34"), D(7)]
    charge = pricing(
        M.PERCENTAGE,
        percentage_rate="2.9",
        fixed_fee_per_event="0.30",
        free_units="2",
        min_fee_per_event="0.5",
    )
    billed_fees = sum(percentage_event_fee(charge, value) for value in values[2:])  # what SQL sums

    rating = rate_percentage(charge, fees=billed_fees, events=4, total_value=sum(values), currency=currency)

    assert rating == rate_percentage_events(charge, values, currency=currency)
    assert billed_fees == D("0.65786") + D("0.503")  # 12.34 and 7; 100 and 0.01 are free
    assert rating.amount == D(amount)


# --- proration ------------------------------------------------------------------------------------

DAY = timedelta(days=1)
MICROSECOND = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("amount", "covered", "period", "currency", "prorated"),
    [
        ("31.00", 15 * DAY, 31 * DAY, "USD", "15.00"),
        ("100.00", 15 * DAY, 31 * DAY, "USD", "48.39"),  # 48.387…
        ("100.00", 31 * DAY, 31 * DAY, "USD", "100.00"),
        ("100.00", timedelta(0), 31 * DAY, "USD", "0.00"),
        ("1000", 10 * DAY, 30 * DAY, "JPY", "333"),
        ("10.000", 10 * DAY, 30 * DAY, "KWD", "3.333"),
        ("0.01", timedelta(microseconds=1), 31 * DAY, "USD", "0.00"),
    ],
)
def test_prorate_by_exact_time_then_round_once(amount, covered, period, currency, prorated):
    rating = rate_fixed(D(amount), covered=covered, period=period, currency=currency)

    assert rating.amount == D(prorated)
    exact = Fraction(D(amount)) * Fraction(covered // MICROSECOND, period // MICROSECOND)
    assert abs(Fraction(rating.exact_amount) - exact) < Fraction(1, 10**60)  # carried to 100 digits
    assert (rating.quantity, rating.unit_price, rating.minimum_applied) == (1, D(amount), False)


def test_a_plan_change_at_noon_splits_the_base_fee_by_the_hour():
    start, change, end = (
        datetime(2024, 7, 1, tzinfo=UTC),
        datetime(2024, 7, 15, 12, tzinfo=UTC),
        datetime(2024, 8, 1, tzinfo=UTC),
    )

    old = rate_fixed(D("100.00"), covered=change - start, period=end - start, currency="USD")
    new = rate_fixed(D("200.00"), covered=end - change, period=end - start, currency="USD")

    assert old.amount == D("46.77")  # 100 × 14.5 / 31 = 46.774…
    assert new.amount == D("106.45")  # 200 × 16.5 / 31 = 106.451…


def test_prorated_parts_are_each_rounded_so_they_may_not_add_up_to_the_whole_fee():
    thirds = [rate_fixed(D("10.00"), covered=DAY, period=3 * DAY, currency="USD").amount for _ in range(3)]

    assert invoice_total(thirds) == D("9.99")


def test_a_daylight_saving_month_prorates_by_real_elapsed_time():
    # March 2024 in Paris has 743 hours (clocks go forward on the 31st); the caller passes elapsed time.
    grid = PeriodGrid(
        anchor=datetime(2024, 1, 1, tzinfo=UTC), timezone="Europe/Paris", interval="month", interval_count=1,
        anniversary=False,
    )  # fmt: skip
    march = grid.period_at(datetime(2024, 3, 10, tzinfo=UTC))
    canceled = datetime(2024, 3, 15, 23, tzinfo=UTC)  # midnight of the 16th in Paris: 360 hours in

    rating = rate_fixed(
        D("31.00"), covered=canceled - march.start, period=march.end - march.start, currency="EUR"
    )

    assert march.end - march.start == timedelta(hours=743)
    assert rating.amount == D("15.02")  # 31 × 360/743, not 31 × 15/31 = 15.00


@pytest.mark.parametrize(
    ("covered", "period"), [(32 * DAY, 31 * DAY), (-DAY, 31 * DAY), (timedelta(0), timedelta(0))]
)
def test_prorate_refuses_a_share_outside_the_period(covered, period):
    with pytest.raises(ValueError, match="covered"):
        prorate(D(100), covered=covered, period=period)


def test_a_negative_fixed_fee_is_refused():
    with pytest.raises(ValueError, match="credit notes"):
        rate_fixed(D(-1), covered=DAY, period=DAY, currency="USD")


# --- totals ---------------------------------------------------------------------------------------


def test_the_invoice_total_is_the_exact_sum_of_the_rounded_lines():
    lines = [
        usd(M.PER_UNIT, "3", unit_price="0.3333").amount,  # 0.9999 → 1.00
        usd(M.GRADUATED, "1000.5", tiers=STEPPED).amount,  # 105.04
        rate_fixed(D("100.00"), covered=15 * DAY, period=31 * DAY, currency="USD").amount,  # 48.39
    ]

    assert invoice_total(lines) == D("154.43")
    assert invoice_total([]) == 0


# --- pricing from a priced item -------------------------------------------------------------------


def test_pricing_reads_an_unsaved_charge_with_its_tiers_json():
    charge = Charge(
        pricing_model=M.GRADUATED,
        tiers=[
            {"up_to": "1000", "unit_price": "0.10", "flat_fee": "0"},
            {"up_to": 5000, "unit_price": "0.08", "flat_fee": "5.00"},
            {"up_to": None, "unit_price": "0.05", "flat_fee": "10.00"},
        ],
        free_units=D("100.000000000000"),
        minimum_amount="2.5",
    )

    assert Pricing.from_item(charge) == Pricing(
        pricing_model=M.GRADUATED, tiers=STEPPED, free_units=D(100), minimum_amount=D("2.5")
    )
    assert rate_usage(Pricing.from_item(charge), D(1100), currency="USD").amount == D("100.00")


def test_pricing_reads_every_field_of_a_contract_line():
    item = ContractLine(
        kind=ChargeKind.USAGE, pricing_model=M.PERCENTAGE, unit_price=D(0), percentage_rate=D("1.5"),
        fixed_fee_per_event=D("0.10"), min_fee_per_event=D("0.20"), max_fee_per_event=D(3), free_units=D(2),
        package_rounding=PackageRounding.DOWN, timing=FeeTiming.IN_ARREARS,
    )  # fmt: skip

    assert Pricing.from_item(item) == Pricing(
        kind=ChargeKind.USAGE, pricing_model=M.PERCENTAGE, percentage_rate=D("1.5"),
        fixed_fee_per_event=D("0.10"), min_fee_per_event=D("0.20"), max_fee_per_event=D(3), free_units=D(2),
        package_rounding=PackageRounding.DOWN,
    )  # fmt: skip


@pytest.mark.parametrize(
    "fields",
    [{"unit_price": 0.1}, {"tiers": [{"up_to": None, "unit_price": 0.1}], "pricing_model": M.VOLUME}],
)
def test_pricing_refuses_floats(fields):
    with pytest.raises(TypeError, match=r"got 0\.1"):
        Pricing.from_item(Charge(**fields))


def test_pricing_refuses_infinite_and_nan_values():
    with pytest.raises(ValueError, match="not a finite number"):
        Pricing.from_item(Charge(unit_price="NaN"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pricing_model": M.GRADUATED}, "tiers ending with an open-ended one"),
        ({"pricing_model": M.VOLUME, "tiers": tiers(("10", "1", "0"))}, "open-ended"),
        (
            {
                "pricing_model": M.STAIRSTEP,
                "tiers": tiers(("10", "1", "0"), ("5", "1", "0"), (None, "1", "0")),
            },
            "ascending",
        ),
        ({"pricing_model": M.GRADUATED, "tiers": tiers(("0", "1", "0"), (None, "1", "0"))}, "above zero"),
        (
            {"pricing_model": M.GRADUATED, "tiers": (Tier(None, D(1), D(0)), Tier(None, D(1), D(0)))},
            "open-ended",
        ),
        ({"pricing_model": M.PACKAGE, "unit_price": D(5)}, "package_size"),
        ({"pricing_model": M.PACKAGE, "unit_price": D(5), "package_size": D(0)}, "package_size"),
        ({"pricing_model": M.PERCENTAGE}, "percentage_rate"),
        ({"unit_price": D("-0.01")}, "negative"),
        ({"pricing_model": M.VOLUME, "tiers": tiers((None, "1", "-1"))}, "negative"),
    ],
)
def test_pricing_refuses_what_rating_cannot_price(fields, message):
    with pytest.raises(ValueError, match=message):
        Pricing(**fields)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: rate_usage(pricing(M.PERCENTAGE, percentage_rate="1"), D(1), currency="USD"),
            "rate_percentage",
        ),
        (lambda: rate_usage(Pricing(kind=ChargeKind.FIXED), D(1), currency="USD"), "rate_fixed"),
        (
            lambda: rate_percentage(Pricing(), fees=D(0), events=0, total_value=D(0), currency="USD"),
            "percentage",
        ),
        (lambda: rate_percentage(CARD, fees=D(0), events=-1, total_value=D(0), currency="USD"), "negative"),
        (lambda: percentage_event_fee(Pricing(), D(1)), "percentage_rate"),
    ],
)
def test_each_function_prices_only_its_own_kind_of_charge(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the pricing options of issue 13 ----------------------------------------------------------------

# 1-100 at 1 % plus 2.00 once; 101+ at 0.5 % plus 3.00 once.
PERCENT_TIERS = (Tier(D(100), D(0), D(2), rate=D(1)), Tier(None, D(0), D(3), rate=D("0.5")))


def test_graduated_percentage_breaks_down_by_tier_with_the_rate_as_a_unit_price():
    rating = rate_usage(pricing(M.GRADUATED_PERCENTAGE, tiers=PERCENT_TIERS), D(300), currency="USD")

    assert rating.tiers == (
        TierLine(1, D(100), D("0.01"), D(2), D(3)),
        TierLine(2, D(200), D("0.005"), D(3), D(4)),
    )
    assert rating.amount == D("7.00")


def test_graduated_percentage_free_units_come_off_the_summed_value():
    charge = pricing(M.GRADUATED_PERCENTAGE, tiers=PERCENT_TIERS, free_units="50")

    assert rate_usage(charge, D(150), currency="USD").amount == D("3.00")  # 100 × 1 % + 2.00


@pytest.mark.parametrize(
    ("model", "quantity", "amount", "breakdown"),
    [
        # graduated: 10 × 1 + 10 × 0.5 + 5 × 2 overage
        (M.GRADUATED, "25", "25.00", [(1, "10", "1"), (2, "10", "0.5"), (3, "5", "2")]),
        (M.GRADUATED, "20", "15.00", [(1, "10", "1"), (2, "10", "0.5")]),
        # volume: the 20 units up to the last bound at tier 2's price, plus its flat fee 4, then overage
        (M.VOLUME, "25", "24.00", [(2, "20", "0.5"), (3, "5", "2")]),
        # stairstep: tier 2's step (4.00) plus the overage
        (M.STAIRSTEP, "25", "14.00", [(2, "20", "0"), (3, "5", "2")]),
    ],
)
def test_units_beyond_a_bounded_last_tier_cost_the_overage_price(model, quantity, amount, breakdown):
    bounded = tiers(("10", "1", "0"), ("20", "0.5", "4") if model != M.GRADUATED else ("20", "0.5", "0"))
    charge = pricing(model, tiers=bounded, overage_unit_price="2")

    rating = rate_usage(charge, D(quantity), currency="USD")

    assert rating.amount == D(amount)
    assert [(line.tier, line.units, line.unit_price) for line in rating.tiers] == [
        (tier, D(units), D(price)) for tier, units, price in breakdown
    ]


def test_a_bounded_last_tier_needs_an_overage_price_and_an_overage_price_a_bounded_tier():
    with pytest.raises(ValueError, match="bounded one and an overage_unit_price"):
        pricing(M.GRADUATED, tiers=tiers(("10", "1", "0")))
    with pytest.raises(ValueError, match="bounded one and an overage_unit_price"):
        pricing(M.GRADUATED, tiers=tiers((None, "1", "0")), overage_unit_price="2")


@pytest.mark.parametrize("model", [M.GRADUATED, M.VOLUME, M.STAIRSTEP])
@pytest.mark.parametrize("quantity", ["0", "-3", "40"])  # 40: all of it free
def test_the_first_tiers_flat_fee_is_billed_at_zero_usage_when_asked(model, quantity):
    charge = pricing(model, tiers=STAIRS, free_units="40", bill_flat_fee_at_zero=True)

    rating = rate_usage(charge, D(quantity), currency="USD")

    assert (rating.amount, rating.billable_quantity) == (D("50.00"), D(0))
    assert [(line.tier, line.units, line.amount) for line in rating.tiers] == [(1, D(0), D(50))]


@pytest.mark.parametrize(
    ("fields", "values", "amount"),
    [
        # free amount only: the rate spares the first 500; every event pays its fixed fee
        ({"free_amount": "500"}, ["200", "100", "100", "50", "100"], "1.10"),  # 5 × 0.10 + 1.2 % of 50
        # the event crossing the free amount pays the rate on its part beyond it
        ({"free_amount": "500"}, ["600"], "1.30"),  # 1.2 % of 100 + 0.10
        # both: the free amount runs out first (within the free events): the crossing free event pays
        # the rate on the excess and no fixed fee; the next (still among the first 3) pays in full
        ({"free_amount": "500", "free_units": "3"}, ["600", "100"], "2.50"),  # 1.20 + (1.20 + 0.10)
        # both: the free events run out first: the 4th pays in full although 450 < 500
        ({"free_amount": "500", "free_units": "3"}, ["200", "100", "100", "50"], "0.70"),
        # a refund does not hand the allowance back: the rate is on 250 - 100 in all, plus 3 fixed fees
        ({"free_amount": "100"}, ["150", "-100", "200"], "2.10"),
    ],
)
def test_a_free_amount_spares_the_first_summed_value_from_the_rate(fields, values, amount):
    charge = pricing(M.PERCENTAGE, percentage_rate="1.2", fixed_fee_per_event="0.10", **fields)

    assert rate_percentage_events(charge, [D(value) for value in values], currency="USD").amount == D(amount)


def test_rate_dynamic_rounds_the_summed_amount_once_and_never_bills_below_zero():
    charge = pricing(M.DYNAMIC)

    assert rate_dynamic(charge, quantity=D(3), amount=D("1.005"), currency="USD").amount == D("1.01")
    assert rate_dynamic(charge, quantity=D(3), amount=D("-4"), currency="USD").amount == D(0)
    with pytest.raises(ValueError, match="prices dynamic charges"):
        rate_dynamic(pricing(M.PER_UNIT), quantity=D(1), amount=D(1), currency="USD")
    with pytest.raises(ValueError, match="rate_dynamic"):
        rate_usage(charge, D(1), currency="USD")


def test_pricing_reads_the_new_options_of_a_charge():
    charge = Charge(
        pricing_model=M.GRADUATED_PERCENTAGE,
        tiers=[
            {"up_to": "100", "rate": "1", "flat_fee": "2"},
            {"up_to": None, "rate": "0.5", "flat_fee": "3"},
        ],
        prorate=False,
        amount_property="cost",
        bill_flat_fee_at_zero=True,
    )

    assert Pricing.from_item(charge) == Pricing(
        pricing_model=M.GRADUATED_PERCENTAGE,
        tiers=PERCENT_TIERS,
        prorate=False,
        amount_property="cost",
        bill_flat_fee_at_zero=True,
    )
