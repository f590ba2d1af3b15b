"""Invariants of the rating engine, checked on generated pricing against an independent computation in
exact fractions (`reference_amount`), written from the definitions in docs/pricing.md."""

import math
from datetime import timedelta
from decimal import Decimal, Inexact, localcontext
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from billing_site.money import minor_unit_exponent, to_minor_units
from catalog.pricing import PackageRounding, PricingModel
from invoicing.rating import (
    Pricing,
    Tier,
    invoice_total,
    percentage_event_fee,
    rate_fixed,
    rate_percentage,
    rate_percentage_events,
    rate_usage,
)
from tests.invoicing.factories import D

M = PricingModel
USAGE_MODELS = [M.PER_UNIT, M.GRADUATED, M.VOLUME, M.STAIRSTEP, M.PACKAGE]
MONOTONE_MODELS = [M.PER_UNIT, M.GRADUATED, M.PACKAGE]  # volume can fall at a tier bound; stairstep is
# monotone only if its steps are, which nothing requires
currencies = st.sampled_from(["USD", "EUR", "JPY", "KWD", "BHD"])


def decimals(low: Decimal | int, high: Decimal | int, max_places: int) -> st.SearchStrategy[Decimal]:
    return st.integers(0, max_places).flatmap(
        lambda places: st.decimals(low, high, places=places, allow_nan=False, allow_infinity=False)
    )


prices = decimals(0, 1000, 12)
quantities = decimals(-100, 10**7, 6)  # negative: meter corrections


@st.composite
def tier_tables(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(decimals(D("0.001"), 10**6, 3), max_size=4))))
    return tuple(Tier(up_to, draw(prices), draw(decimals(0, 100, 4))) for up_to in [*bounds, None])


@st.composite
def usage_pricings(draw: st.DrawFn, models: list[PricingModel] = USAGE_MODELS) -> Pricing:
    model = draw(st.sampled_from(models))
    return Pricing(
        pricing_model=model,
        unit_price=draw(prices),
        package_size=draw(decimals(D("0.001"), 10**4, 3)) if model == M.PACKAGE else None,
        package_rounding=draw(st.sampled_from(PackageRounding)),
        free_units=draw(st.one_of(st.just(D(0)), decimals(0, 1000, 3))),
        minimum_amount=draw(st.one_of(st.just(D(0)), decimals(0, 1000, 4))),
        tiers=draw(tier_tables()) if model in (M.GRADUATED, M.VOLUME, M.STAIRSTEP) else (),
    )


def reference_amount(pricing: Pricing, quantity: Decimal) -> Fraction:
    """The exact amount before rounding and minimum, from the definitions, in fractions."""
    billable = max(Fraction(0), Fraction(quantity) - Fraction(pricing.free_units))
    if billable == 0:
        return Fraction(0)
    if pricing.pricing_model == M.PER_UNIT:
        return billable * Fraction(pricing.unit_price)
    if pricing.pricing_model == M.PACKAGE:
        ratio = billable / Fraction(pricing.package_size)
        packages = math.ceil(ratio) if pricing.package_rounding == PackageRounding.UP else math.floor(ratio)
        return packages * Fraction(pricing.unit_price)
    if pricing.pricing_model == M.GRADUATED:
        total, lower = Fraction(0), Fraction(0)
        for tier in pricing.tiers:
            if billable > lower:
                upper = billable if tier.up_to is None else min(billable, Fraction(tier.up_to))
                total += (upper - lower) * Fraction(tier.unit_price) + Fraction(tier.flat_fee)
            if tier.up_to is None:
                return total
            lower = Fraction(tier.up_to)
    tier = next(tier for tier in pricing.tiers if tier.up_to is None or billable <= tier.up_to)
    if pricing.pricing_model == M.VOLUME:
        return billable * Fraction(tier.unit_price) + Fraction(tier.flat_fee)
    return Fraction(tier.flat_fee)


def half_up(value: Fraction, currency: str) -> Fraction:
    scale = 10 ** minor_unit_exponent(currency)
    magnitude = math.floor(abs(value) * scale + Fraction(1, 2))
    return Fraction(magnitude if value >= 0 else -magnitude, scale)


def billed(exact: Fraction, minimum: Decimal, currency: str) -> Fraction:
    return max(half_up(exact, currency), Fraction(0), half_up(Fraction(minimum), currency))


@given(usage_pricings(), quantities, currencies)
def test_the_amount_is_the_half_up_rounding_of_the_exact_amount_raised_to_the_minimum(
    pricing, quantity, currency
):
    exact = reference_amount(pricing, quantity)

    rating = rate_usage(pricing, quantity, currency=currency)

    assert Fraction(rating.exact_amount) == exact
    assert Fraction(rating.amount) == billed(exact, pricing.minimum_amount, currency)
    assert rating.amount >= 0
    assert rating.amount.as_tuple().exponent == -minor_unit_exponent(
        currency
    )  # shown at the currency's places
    assert rating.minimum_applied == (
        half_up(Fraction(pricing.minimum_amount), currency) > half_up(exact, currency)
    )


@given(usage_pricings(models=[M.GRADUATED, M.VOLUME, M.STAIRSTEP]), quantities)
def test_the_tier_breakdown_explains_the_amount(pricing, quantity):
    rating = rate_usage(pricing, quantity, currency="USD")

    assert sum(line.amount for line in rating.tiers) == rating.exact_amount
    assert all(line.amount == line.units * line.unit_price + line.flat_fee for line in rating.tiers)
    assert all(line.units > 0 for line in rating.tiers)
    if pricing.pricing_model == M.GRADUATED:
        assert [line.tier for line in rating.tiers] == list(range(1, len(rating.tiers) + 1))
        assert sum(line.units for line in rating.tiers) == rating.billable_quantity
    else:
        assert [line.units for line in rating.tiers] == (
            [rating.billable_quantity] if rating.billable_quantity else []
        )


@given(usage_pricings(models=MONOTONE_MODELS), quantities, quantities, currencies)
def test_more_usage_never_costs_less_under_per_unit_graduated_and_package(pricing, first, second, currency):
    less, more = sorted([first, second])

    assert (
        rate_usage(pricing, less, currency=currency).exact_amount
        <= rate_usage(pricing, more, currency=currency).exact_amount
    )
    assert (
        rate_usage(pricing, less, currency=currency).amount
        <= rate_usage(pricing, more, currency=currency).amount
    )


@st.composite
def percentage_pricings(draw: st.DrawFn) -> Pricing:
    low, high = sorted(draw(st.lists(decimals(0, 50, 4), min_size=2, max_size=2)))
    return Pricing(
        pricing_model=M.PERCENTAGE,
        percentage_rate=draw(decimals(0, 100, 6)),
        fixed_fee_per_event=draw(st.none() | decimals(0, 5, 12)),
        min_fee_per_event=draw(st.none() | st.just(low)),
        max_fee_per_event=draw(st.none() | st.just(high)),
        free_units=D(draw(st.integers(0, 5))),
        minimum_amount=draw(st.one_of(st.just(D(0)), decimals(0, 100, 4))),
    )


@given(percentage_pricings(), st.lists(decimals(-1000, 10**6, 4), max_size=20), currencies)
def test_percentage_is_the_rounded_sum_of_each_billed_events_clamped_fee(pricing, values, currency):
    def event_fee(value: Decimal) -> Fraction:
        fee = Fraction(pricing.percentage_rate) / 100 * Fraction(value) + Fraction(
            pricing.fixed_fee_per_event or 0
        )
        if pricing.min_fee_per_event is not None:
            fee = max(fee, Fraction(pricing.min_fee_per_event))
        if pricing.max_fee_per_event is not None:
            fee = min(fee, Fraction(pricing.max_fee_per_event))
        return fee

    billed_values = values[int(pricing.free_units) :]
    exact = sum((event_fee(value) for value in billed_values), Fraction(0))

    rating = rate_percentage_events(pricing, values, currency=currency)

    assert Fraction(rating.amount) == billed(exact, pricing.minimum_amount, currency)
    assert rating.minimum_applied == (
        half_up(Fraction(pricing.minimum_amount), currency) > max(half_up(exact, currency), Fraction(0))
    )
    assert rating.billable_quantity == len(billed_values)
    with localcontext(prec=100, traps=[Inexact]):  # the sums the lead's SQL computes, exactly
        fees = sum((percentage_event_fee(pricing, value) for value in billed_values), D(0))
        total_value = sum(values, D(0))
    assert rating == rate_percentage(
        pricing, fees=fees, events=len(values), total_value=total_value, currency=currency
    )


MICROSECONDS_IN_400_DAYS = 400 * 86_400 * 10**6


@given(
    decimals(0, 10**9, 12),
    st.integers(1, MICROSECONDS_IN_400_DAYS).flatmap(
        lambda period: st.tuples(st.integers(0, period), st.just(period))
    ),
    currencies,
)
def test_proration_rounds_the_exact_time_fraction_half_up(amount, covered_and_period, currency):
    covered, period = covered_and_period

    rating = rate_fixed(
        amount,
        covered=timedelta(microseconds=covered),
        period=timedelta(microseconds=period),
        currency=currency,
    )

    assert Fraction(rating.amount) == half_up(Fraction(amount) * Fraction(covered, period), currency)
    assert 0 <= rating.exact_amount <= amount


@given(st.lists(st.tuples(usage_pricings(), quantities), min_size=1, max_size=8), currencies)
def test_the_invoice_total_is_exactly_the_sum_of_its_displayed_lines(lines, currency):
    amounts = [rate_usage(pricing, quantity, currency=currency).amount for pricing, quantity in lines]

    total = invoice_total(amounts)

    assert Fraction(total) == sum(Fraction(amount) for amount in amounts)
    assert to_minor_units(total, currency) == sum(to_minor_units(amount, currency) for amount in amounts)


percent_tiers = st.lists(
    st.tuples(st.integers(1, 1000), st.decimals("0", "100", places=2), st.decimals("0", "50", places=2)),
    min_size=1,
    max_size=4,
).map(
    lambda rows: tuple(
        Tier(None if i == len(rows) - 1 else D(sum(r[0] for r in rows[: i + 1])), D(0), flat, rate=rate)
        for i, (_, rate, flat) in enumerate(rows)
    )
)
amounts = st.decimals("0", "100000", places=2)


@given(tiers=percent_tiers, a=amounts, b=amounts, at_zero=st.booleans())
def test_graduated_percentage_is_monotone_in_the_summed_value(tiers, a, b, at_zero):
    charge = Pricing(pricing_model=M.GRADUATED_PERCENTAGE, tiers=tiers, bill_flat_fee_at_zero=at_zero)
    low, high = sorted([a, b])

    assert rate_usage(charge, low, currency="USD").amount <= rate_usage(charge, high, currency="USD").amount


@given(
    values=st.lists(
        st.decimals("0", "500", places=2), max_size=12
    ),  # a refund within the allowance is free too
    free_amount=st.decimals("0", "1000", places=2),
    free_units=st.integers(0, 4),
)
def test_a_free_amount_never_costs_more_than_none(values, free_amount, free_units):
    base = Pricing(pricing_model=M.PERCENTAGE, percentage_rate=D("1.2"), fixed_fee_per_event=D("0.10"))
    with_events = Pricing(
        pricing_model=M.PERCENTAGE,
        percentage_rate=D("1.2"),
        fixed_fee_per_event=D("0.10"),
        free_units=D(free_units),
    )
    with_both = Pricing(
        pricing_model=M.PERCENTAGE,
        percentage_rate=D("1.2"),
        fixed_fee_per_event=D("0.10"),
        free_units=D(free_units),
        free_amount=free_amount or None,
    )

    full = rate_percentage_events(base, values, currency="USD").exact_amount
    both = rate_percentage_events(with_both, values, currency="USD").exact_amount
    assert both <= full
    assert rate_percentage_events(with_events, values, currency="USD").exact_amount <= full
