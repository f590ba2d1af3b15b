"""Pricing examples published in public billing documentation, priced to the cent.

Each case copies the source's own numbers (tiers, quantities, totals) and cites where they come from.
Tier bounds are translated to inclusive `up_to` values ("1-5, 6-10, 11+" is up_to 5, up_to 10, open).
"""

from datetime import timedelta

import pytest

from catalog.pricing import PackageRounding, PricingModel
from invoicing.rating import Tier, rate_dynamic, rate_fixed, rate_percentage_events, rate_usage
from tests.invoicing.factories import D, pricing, tiers

M = PricingModel

# Stripe, "Set up tiered pricing" (https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing):
# Typographic's fonts, first tier 1-5 at 7 USD, second 6-10 at 6.5 USD, third 11+ at 6 USD.
TYPOGRAPHIC = tiers(("5", "7", "0"), ("10", "6.5", "0"), (None, "6", "0"))
# Zuplo, "Pricing models" (https://zuplo.com/docs/articles/monetization/pricing-models):
# 0-1,000 at $0.10, 1,001-10,000 at $0.05, 10,001+ at $0.01.
ZUPLO = tiers(("1000", "0.10", "0"), ("10000", "0.05", "0"), (None, "0.01", "0"))
# Oracle Banking, "Examples for Tier Based Amount"
# (https://docs.oracle.com/en/industries/financial-services/banking-virtual-account-cloud-service/14.7.5.0.0/vaccg/examples-tier-based-amount.html):
# count slabs 0-250, 251-500, >500; "with no unit" the slab's charge is a flat amount (10, 20, 30 USD),
# "with unit" it is per unit (1, 2, 3 USD).
ORACLE_FLAT = tiers(("250", "0", "10"), ("500", "0", "20"), (None, "0", "30"))
ORACLE_UNIT = tiers(("250", "1", "0"), ("500", "2", "0"), (None, "3", "0"))


@pytest.mark.parametrize(
    ("model", "fields", "quantity", "total"),
    [
        # Zuplo, same page: "At $0.001 per unit, a customer using 100,000 API calls pays $100".
        (M.PER_UNIT, {"unit_price": "0.001"}, "100000", "100.00"),
        # Flexprice, "Flat fee" (https://docs.flexprice.io/docs/product-catalogue/plans/billing-models/flat-fee):
        # $0.05 per API call, 1,000 calls: $50.
        (M.PER_UNIT, {"unit_price": "0.05"}, "1000", "50.00"),
        # Zuora, "Charge-level min/max rules for per unit pricing"
        # (https://docs.zuora.com/en/zuora-billing/set-up-zuora-billing/build-product-and-prices/dynamic-pricing/use-cases/charge-level-minmax-rules-for-per-unit-pricing):
        # CA: $10 per unit, minimum $100, quantity 8: 8 × $10 = $80, result $100 (minimum enforced);
        # NY: $12 per unit, minimum $120, quantity 10: $120 (within range).
        (M.PER_UNIT, {"unit_price": "10", "minimum_amount": "100"}, "8", "100.00"),
        (M.PER_UNIT, {"unit_price": "12", "minimum_amount": "120"}, "10", "120.00"),
        # Zuplo graduated: "A customer using 15,000 units pays (1,000 × $0.10) + (9,000 × $0.05) +
        # (5,000 × $0.01) = $100 + $450 + $50 = $600"; volume: "15,000 × $0.01 = $150".
        (M.GRADUATED, {"tiers": ZUPLO}, "15000", "600.00"),
        (M.VOLUME, {"tiers": ZUPLO}, "15000", "150.00"),
        # Autumn, "Graduated Pricing" (https://docs.useautumn.com/documentation/modelling-pricing/graduated-pricing):
        # first 1,000 requests $0.01, 1,001-10,000 $0.008, above $0.005; 15,000 requests pay $107.
        (
            M.GRADUATED,
            {"tiers": tiers(("1000", "0.01", "0"), ("10000", "0.008", "0"), (None, "0.005", "0"))},
            "15000",
            "107.00",
        ),
        # PaymentKit, "Tiered pricing" (https://docs.paymentkit.com/guides/product-catalog/pricing-structures/tiered.md):
        # graduated 1-1,000 calls $0.01, 1,001-5,000 $0.008, 5,001+ $0.005; 3,000 calls: $10 + $16 = $26.
        # Volume 1-10 seats $10, 11-50 $9, 51+ $8; 12 seats: 12 × $9 = $108.
        (
            M.GRADUATED,
            {"tiers": tiers(("1000", "0.01", "0"), ("5000", "0.008", "0"), (None, "0.005", "0"))},
            "3000",
            "26.00",
        ),
        (M.VOLUME, {"tiers": tiers(("10", "10", "0"), ("50", "9", "0"), (None, "8", "0"))}, "12", "108.00"),
        # Oracle: "Slab Amount" is graduated: count 1000 with no unit is 10+20+30 = 60 USD (a flat fee
        # for every slab reached); with unit, 1*250+2*250+3*500 = 2250 USD. "Variable Amount" is volume
        # with unit (3*1000 = 3000 USD) and stairstep with no unit (30 USD).
        (M.GRADUATED, {"tiers": ORACLE_FLAT}, "1000", "60.00"),
        (M.GRADUATED, {"tiers": ORACLE_UNIT}, "1000", "2250.00"),
        (M.VOLUME, {"tiers": ORACLE_UNIT}, "1000", "3000.00"),
        (M.STAIRSTEP, {"tiers": ORACLE_FLAT}, "1000", "30.00"),
        # Recurly, "Tiered, volume and stairstep pricing"
        # (https://docs.recurly.com/recurly-subscriptions/docs/-tiered-stairstep-and-volume-pricing):
        # $50 for 1-10 seats, $100 for 11-20, $150 for 21+; "A customer buying 25 seats pays $150 — the
        # same as a customer buying 100."
        (
            M.STAIRSTEP,
            {"tiers": tiers(("10", "0", "50"), ("20", "0", "100"), (None, "0", "150"))},
            "25",
            "150.00",
        ),
        (
            M.STAIRSTEP,
            {"tiers": tiers(("10", "0", "50"), ("20", "0", "100"), (None, "0", "150"))},
            "100",
            "150.00",
        ),
        # Stripe, "Transform quantities" (https://docs.stripe.com/billing/subscriptions/usage-based/transform-quantities):
        # 10 USD per hour of car rental, usage in minutes, rounded up: 150 minutes cost 30 USD.
        (M.PACKAGE, {"unit_price": "10", "package_size": "60"}, "150", "30.00"),
        # Lago, "Package" (https://getlago.com/docs/guide/plans/charges/charge-models/package): $5 per
        # 100 units, first 100 units free: 201 units cost $0 + $5 + $5 = $10.
        (M.PACKAGE, {"unit_price": "5", "package_size": "100", "free_units": "100"}, "201", "10.00"),
    ],
)
def test_published_usage_examples(model, fields, quantity, total):
    assert rate_usage(pricing(model, **fields), D(quantity), currency="USD").amount == D(total)


@pytest.mark.parametrize(
    ("fonts", "total"), [("1", "7"), ("5", "35"), ("6", "39"), ("20", "120"), ("25", "150")]
)
def test_stripe_typographic_volume_table(fonts, total):
    # Stripe, same page, volume-based pricing table: 1 font 7 USD, 5 fonts 35 USD, 6 fonts 39 USD
    # ("6 × 6.5 USD"), 20 fonts 120 USD, 25 fonts 150 USD.
    assert rate_usage(pricing(M.VOLUME, tiers=TYPOGRAPHIC), D(fonts), currency="USD").amount == D(total)


def test_stripe_typographic_graduated_within_the_first_tier():
    # Stripe, same page, graduated pricing: "5 fonts result in the same charge as volume-based
    # pricing: 35 USD total at 7 USD per font".
    assert rate_usage(pricing(M.GRADUATED, tiers=TYPOGRAPHIC), D(5), currency="USD").amount == D(35)


@pytest.mark.parametrize(
    ("users", "total"), [("1", "10"), ("3", "10"), ("5", "10"), ("6", "20"), ("7", "20")]
)
def test_stripe_ten_dollars_per_five_users_rounded_up(users, total):
    # Stripe, "Quantity transformation" (https://stripe.com/docs/billing/subscriptions/quantity-transformation):
    # "$10 for every 5 users (or portion thereof)": 1, 3 and 5 users $10; 6 and 7 users $20.
    charge = pricing(M.PACKAGE, unit_price="10", package_size="5", package_rounding=PackageRounding.UP)

    assert rate_usage(charge, D(users), currency="USD").amount == D(total)


def test_lago_percentage_with_free_events_and_a_free_amount():
    # Lago, "Percentage" (https://getlago.com/docs/guide/plans/charges/charge-models/percentage):
    # 1.2 % and $0.10 per transaction, "the first 3 events or $500 are free"; transactions of $200,
    # $100, $100, $50: the fourth is past the free events though only $450 is summed, so "the charge
    # will be $0.10 x 1 event + 1.2% of $50 = $0.70" (whichever allowance runs out first ends both).
    charge = pricing(
        M.PERCENTAGE, percentage_rate="1.2", fixed_fee_per_event="0.10", free_units="3", free_amount="500"
    )

    rating = rate_percentage_events(charge, [D(200), D(100), D(100), D(50)], currency="USD")

    assert rating.amount == D("0.70")


# Lago, "Graduated percentage"
# (https://getlago.com/docs/guide/plans/charges/charge-models/graduated-percentage): tier 1 0-1,000 at
# 1 % plus $200, tier 2 1,001-10,000 at 2 % plus $300, tier 3 10,001+ at 3 % plus $400. Transactions of
# $500 ("= $205.00"), then $550 ("= $306.00"), then $4,000 ("= $80.00"): the period's sums.
LAGO_GRADUATED_PERCENTAGE = (
    Tier(D(1000), D(0), D(200), rate=D(1)),
    Tier(D(10000), D(0), D(300), rate=D(2)),
    Tier(None, D(0), D(400), rate=D(3)),
)


@pytest.mark.parametrize(
    ("summed", "total"),
    [("500", "205.00"), ("1050", "511.00"), ("5050", "591.00")],  # 205; 205 + 306; 205 + 306 + 80
)
def test_lago_graduated_percentage(summed, total):
    charge = pricing(M.GRADUATED_PERCENTAGE, tiers=LAGO_GRADUATED_PERCENTAGE)

    assert rate_usage(charge, D(summed), currency="USD").amount == D(total)


def test_lago_dynamic_sums_the_events_amounts():
    # Lago, "Dynamic" (https://getlago.com/docs/guide/plans/charges/charge-models/dynamic): events of
    # 7 units at $0.70, 5 at $0.55 and 10 at $2.20 make one fee of 22 units, "$3.45".
    charge = pricing(M.DYNAMIC)

    rating = rate_dynamic(charge, quantity=D(22), amount=D("0.70") + D("0.55") + D("2.20"), currency="USD")

    assert (rating.quantity, rating.amount) == (D(22), D("3.45"))


# Stripe, "Model usage-based pricing"
# (https://docs.stripe.com/billing/subscriptions/usage-based/pricing-models), fixed fee and overage:
# Llama AI, 200 USD a month including 100,000 tokens, then 0.001 USD a token, set up as graduated tiers
# "0-100,000: 0.00 per unit, 200.00 flat fee; 100,001+: 0.001 per unit". Stripe bills the first tier's
# flat fee whatever the usage, zero included: Billable does so with bill_flat_fee_at_zero.
LLAMA = tiers(("100000", "0", "200"), (None, "0.001", "0"))


@pytest.mark.parametrize(("tokens", "total"), [("0", "200.00"), ("100000", "200.00"), ("150000", "250.00")])
def test_stripe_fixed_fee_and_overage_bills_the_first_tier_fee_at_zero_usage(tokens, total):
    charge = pricing(M.GRADUATED, tiers=LLAMA, bill_flat_fee_at_zero=True)

    assert rate_usage(charge, D(tokens), currency="USD").amount == D(total)


# Zuora, "Storage (usage, tiered with overage)"
# (https://docs.zuora.com/en/zuora-billing/set-up-zuora-billing/build-product-and-prices/set-up-product-catalog/create-product-rate-plan-charges/storage-usage-tiered-with-overage):
# tiers 1-500 at 0, 500-1000 at .10, 1000-3000 at .08, 3000-10000 at .06, "Overage Price .15 USD Per
# Unit Thereafter".
ZUORA_STORAGE = tiers(("500", "0", "0"), ("1000", "0.10", "0"), ("3000", "0.08", "0"), ("10000", "0.06", "0"))


@pytest.mark.parametrize(
    ("gigabytes", "total"),
    [
        ("800", "30.00"),  # 300 × 0.10
        ("10000", "630.00"),  # 500 × 0.10 + 2,000 × 0.08 + 7,000 × 0.06 = 50 + 160 + 420
        ("12000", "930.00"),  # the same plus 2,000 × 0.15 overage
    ],
)
def test_zuora_tiered_with_overage(gigabytes, total):
    charge = pricing(M.GRADUATED, tiers=ZUORA_STORAGE, overage_unit_price="0.15")

    assert rate_usage(charge, D(gigabytes), currency="USD").amount == D(total)


@pytest.mark.parametrize(
    ("fee", "days", "month_days", "total"),
    [
        # Lago, "Assign plans to customers" (https://docs.getlago.com/guide/subscriptions/assign-plan):
        # Premium plan $50 monthly, signed up on August 10th: "22 days x $50 / 31 days = $35.48".
        ("50", 22, 31, "35.48"),
        # Lago, "Plan model" (https://doc.getlago.com/docs/guide/plans/plan-model): $50 monthly with a
        # 5-day trial from April 1st: "$50 x 25 days due / 30 days in April = $41.67".
        ("50", 25, 30, "41.67"),
        # Lago, "Prorated vs Full" (https://docs.getlago.com/guide/plans/charges/prorated-vs-full):
        # a $10 seat added on June 10th, used for 22 days: "$7.33".
        ("10", 22, 30, "7.33"),
    ],
)
def test_lago_proration_examples(fee, days, month_days, total):
    rating = rate_fixed(
        D(fee), covered=timedelta(days=days), period=timedelta(days=month_days), currency="USD"
    )

    assert rating.amount == D(total)
