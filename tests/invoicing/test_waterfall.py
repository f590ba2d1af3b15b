"""The waterfall's arithmetic: the worked examples of docs/pricing.md, and its invariants.

Vendors' published examples: Stripe, "Tax rates" (https://docs.stripe.com/billing/taxes/tax-rates):
an inclusive 20 % rate on a 120 price is 20 of tax; Lago, "Coupons"
(https://getlago.com/docs/guide/coupons): a fixed amount coupon larger than the invoice brings it to
zero and no further.
"""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from invoicing.waterfall import Coupon, Credit, Item, Rate, compose

D = Decimal
VAT = Rate(key=1, name="VAT", percentage=D(20))
VAT_INCLUDED = Rate(key=2, name="VAT", percentage=D(20), inclusive=True)


def test_a_percentage_coupon_takes_each_lines_share_rounded_per_line():
    result = compose(
        [Item(D("49.00")), Item(D("12.35"))], [Coupon(1, frozenset({0, 1}), D(20))], [], currency="USD"
    )

    assert result.item_discounts == (D("9.80"), D("2.47"))
    assert (result.discount, result.total) == (D("12.27"), D("49.08"))


def test_a_fixed_amount_is_spread_rounded_down_and_its_cents_go_to_the_largest_line():
    items = [Item(D("10.00")), Item(D("10.00")), Item(D("10.00"))]

    result = compose(items, [Coupon(1, frozenset({0, 1, 2}), amount_off=D("10.00"))], [], currency="USD")

    assert result.item_discounts == (D("3.34"), D("3.33"), D("3.33"))
    assert result.discount == D("10.00")


def test_a_fixed_amount_larger_than_the_lines_brings_them_to_zero_and_no_further():
    result = compose([Item(D("30.00"))], [Coupon(1, frozenset({0}), amount_off=D("50"))], [], currency="USD")

    assert result.item_discounts == (D("30.00"),)
    assert result.total == 0


def test_a_coupon_takes_no_more_than_is_left_to_pay_net_of_credit_lines():
    # 100.00 of fees and a 60.00 proration credit: a 100 % coupon takes 40.00, not 100.00
    items = [Item(D("100.00")), Item(D("-60.00"))]

    whole = compose(items, [Coupon(1, frozenset({0, 1}), D(100))], [], currency="USD")
    fixed = compose(items, [Coupon(1, frozenset({0, 1}), amount_off=D("80"))], [], currency="USD")

    assert (whole.discount, whole.total) == (D("40.00"), 0)
    assert (fixed.discount, fixed.total) == (D("40.00"), 0)


def test_a_coupon_limited_to_some_lines_leaves_the_others():
    result = compose(
        [Item(D("100.00")), Item(D("40.00"))], [Coupon(1, frozenset({1}), D(50))], [], currency="USD"
    )

    assert result.item_discounts == (D(0), D("20.00"))


def test_coupons_stack_on_what_the_previous_ones_left():
    coupons = [Coupon(1, frozenset({0}), D(50)), Coupon(2, frozenset({0}), amount_off=D("60"))]

    result = compose([Item(D("100.00"))], coupons, [], currency="USD")

    assert [discount.amount for discount in result.discounts] == [D("50.00"), D("50.00")]
    assert result.total == 0


def test_exclusive_tax_is_on_the_discounted_amount_and_added():
    result = compose([Item(D("100.00"), (VAT,))], [Coupon(1, frozenset({0}), D(20))], [], currency="USD")

    assert (result.tax, result.tax_exclusive, result.total) == (D("16.00"), D("16.00"), D("96.00"))
    assert result.taxes[0].taxable == D("80.00")


def test_inclusive_tax_is_the_part_of_the_price_that_is_tax_and_adds_nothing():
    result = compose([Item(D("120.00"), (VAT_INCLUDED,))], [], [], currency="EUR")

    assert (result.tax, result.tax_exclusive, result.total) == (D("20.00"), D(0), D("120.00"))


def test_credits_pay_in_the_order_given_up_to_the_total():
    result = compose(
        [Item(D("100.00"), (VAT,))],
        [Coupon(1, frozenset({0}), D(20))],
        [Credit("first", D("50.00")), Credit("second", D("80.00"))],
        currency="USD",
    )

    assert result.credits == (("first", D("50.00")), ("second", D("46.00")))
    assert result.amount_due == 0


def test_credits_never_pay_a_total_of_zero_or_less():
    result = compose([Item(D("-10.00"))], [], [Credit("grant", D("50"))], currency="USD")

    assert result.credits == ()


def test_tax_is_rounded_once_per_line_and_the_summary_is_their_sum():
    result = compose([Item(D("0.03"), (VAT,)), Item(D("0.03"), (VAT,))], [], [], currency="USD")

    # 0.006 rounds to 0.01 on each line: the summary says 0.02, not 20 % of 0.06 = 0.012 → 0.01.
    assert [tax for line in result.item_taxes for _, tax in line] == [D("0.01"), D("0.01")]
    assert result.tax == D("0.02")


cents = st.integers(min_value=-50_000, max_value=500_000).map(lambda n: D(n).scaleb(-2))
rates = st.sampled_from([(), (VAT,), (VAT_INCLUDED,), (VAT, Rate(key=3, name="City", percentage=D("2.5")))])


@st.composite
def invoices(draw):
    items = draw(st.lists(st.builds(Item, cents, rates), min_size=1, max_size=6))
    everything = frozenset(range(len(items)))
    coupons = draw(
        st.lists(
            st.one_of(
                st.builds(Coupon, st.just(1), st.sets(st.sampled_from(sorted(everything))).map(frozenset),
                          st.integers(min_value=1, max_value=100).map(D)),
                st.builds(lambda amount: Coupon(2, everything, amount_off=amount), cents.map(abs)),
            ),
            max_size=3,
        )
    )  # fmt: skip
    credits = draw(st.lists(st.builds(Credit, st.integers(), cents.map(abs)), max_size=3))
    return items, coupons, credits


@given(invoices())
def test_the_waterfall_adds_up_to_the_cent(invoice):
    items, coupons, credits = invoice
    result = compose(items, coupons, credits, currency="USD")

    assert result.discount == sum(result.item_discounts)
    assert all(sum(d.parts.values()) == d.amount for d in result.discounts)
    assert result.tax == sum(tax for line in result.item_taxes for _, tax in line)
    assert result.total == sum(item.amount for item in items) - result.discount + result.tax_exclusive
    assert result.amount_due == result.total - result.credits_applied
    for value in (result.discount, result.tax, result.total, result.credits_applied):
        assert value == value.quantize(D("0.01"))


@given(invoices())
def test_no_discount_takes_a_line_below_zero_and_credits_never_exceed_the_total(invoice):
    items, coupons, credits = invoice
    result = compose(items, coupons, credits, currency="USD")

    for item, discount in zip(items, result.item_discounts, strict=True):
        assert 0 <= discount <= max(item.amount, D(0))
    assert result.subtotal - result.discount >= min(result.subtotal, D(0))
    # No coupon makes a total negative, taxes included (nor more negative than it was).
    assert result.total >= min(compose(items, [], [], currency="USD").total, D(0))
    assert 0 <= result.credits_applied <= max(result.total, D(0))
    assert result.amount_due >= min(result.total, D(0))


@given(st.lists(st.builds(Item, cents.map(abs), rates), min_size=1, max_size=6))
def test_a_hundred_percent_coupon_leaves_nothing_due(items):
    result = compose(items, [Coupon(1, frozenset(range(len(items))), D(100))], [], currency="USD")

    assert result.total == 0
    assert result.amount_due == 0


def test_coupons_give_back_what_tax_on_a_credit_line_would_take_below_zero():
    # 100.00 untaxed and a 50.00 credit taxed at 20 %: 40.00 without a coupon. A 100 % coupon would
    # take 50.00 and leave -10.00 of tax on the credit: it gives back 10.00 and the total is 0.
    items = [Item(D("100.00")), Item(D("-50.00"), (VAT,))]

    result = compose(items, [Coupon(1, frozenset({0, 1}), D(100))], [], currency="USD")

    assert (result.discount, result.tax, result.total) == (D("40.00"), D("-10.00"), 0)
