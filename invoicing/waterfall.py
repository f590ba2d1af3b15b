"""The invoice waterfall: fees and usage → discounts → taxes → prepaid credits → amount due.

Pure functions over `Decimal` (no database): invoicing/composition.py gathers the coupons, tax
rates and credits that apply and turns the result into lines. docs/pricing.md states the rules
with worked examples; in short:

- **Subtotal**: the sum of the fee and usage lines (adjustments, proration credits and true-ups
  included), each already rounded once.
- **Discounts**, coupon by coupon in the order they were applied, each on what the previous ones
  left of the lines it is limited to; only lines with a positive amount are discounted, and a
  coupon takes at most what is left to pay (of its lines net of their credits, and of the
  invoice), so it never makes a total negative. A percentage takes its share of each line,
  rounded half-up per line. A fixed amount (or a percentage cut to that cap) is spread over the
  lines in proportion to their amounts, each part rounded *down* to the minor unit; the cents
  lost that way go to the largest line (the first of equals), then the next largest if that one
  is used up, so the parts add up to the amount. Should tax on a credit line still take the total
  below what it was without coupons, the coupons give the difference back, the last first.
- **Taxes**, per line on its discounted amount and per rate, each rounded half-up once:
  exclusive rates add `amount × p / 100`; inclusive ones are the part of the amount that is tax,
  `amount × p / (100 + p)`, and add nothing. The tax summary of a rate is the sum of its lines.
- **Total** = subtotal - discount + exclusive tax.
- **Prepaid credits**, block by block in the order given, up to the total (never on a total of
  zero or less); **amount due** = total - credits applied.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, localcontext

from billing_site.money import minor_unit_exponent, round_money

_CONTEXT = Context(prec=100, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Rate:
    key: Hashable
    name: str
    percentage: Decimal
    inclusive: bool = False
    jurisdiction: str = ""


@dataclass(frozen=True)
class Item:
    """A fee or usage line: its amount, and the tax rates that apply to it."""

    amount: Decimal
    rates: tuple[Rate, ...] = ()


@dataclass(frozen=True)
class Coupon:
    """A coupon as it applies to one invoice: `percent_off`, or `amount_off` in the invoice's
    currency (already prorated), on the items at the indexes in `eligible`."""

    key: Hashable
    eligible: frozenset[int]
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None


@dataclass(frozen=True)
class Credit:
    key: Hashable
    balance: Decimal


@dataclass(frozen=True)
class Discount:
    key: Hashable
    amount: Decimal  # positive
    parts: dict[int, Decimal]  # item index → its share (positive)


@dataclass(frozen=True)
class TaxSummary:
    rate: Rate
    taxable: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Result:
    subtotal: Decimal
    discounts: tuple[Discount, ...]
    item_discounts: tuple[Decimal, ...]  # per item, positive
    item_taxes: tuple[tuple[tuple[Rate, Decimal], ...], ...]  # per item: (rate, tax)
    taxes: tuple[TaxSummary, ...]
    credits: tuple[tuple[Hashable, Decimal], ...]  # (credit key, amount applied), positive

    @property
    def discount(self) -> Decimal:
        return sum((discount.amount for discount in self.discounts), Decimal(0))

    @property
    def tax(self) -> Decimal:
        return sum((summary.amount for summary in self.taxes), Decimal(0))

    @property
    def tax_exclusive(self) -> Decimal:
        return sum((summary.amount for summary in self.taxes if not summary.rate.inclusive), Decimal(0))

    @property
    def total(self) -> Decimal:
        return self.subtotal - self.discount + self.tax_exclusive

    @property
    def credits_applied(self) -> Decimal:
        return sum((amount for _, amount in self.credits), Decimal(0))

    @property
    def amount_due(self) -> Decimal:
        return self.total - self.credits_applied


def compose(
    items: Sequence[Item], coupons: Sequence[Coupon], credits: Sequence[Credit], *, currency: str
) -> Result:
    """The waterfall of one invoice (see the module docstring)."""
    with localcontext(_CONTEXT):
        discounts = _discounts(items, coupons, currency)
        result = _taxed(items, discounts, currency)
        # Tax follows the lines: a credit line taxed at a higher rate than the lines a coupon
        # emptied can still take the total below what it was without coupons. The coupons then
        # give back the difference, the last applied first (giving back d adds at least d).
        floor = min(_taxed(items, (), currency).total, Decimal(0))
        give_back = Decimal(0)
        while result.total < floor:
            give_back += floor - result.total
            result = _taxed(items, _given_back(discounts, give_back, currency), currency)
        applied = []
        remaining = result.total
        for credit in credits:
            if remaining <= 0:
                break
            amount = min(credit.balance, remaining)
            if amount > 0:
                applied.append((credit.key, amount))
                remaining -= amount
        return Result(**{**result.__dict__, "credits": tuple(applied)})


def _discounts(items: Sequence[Item], coupons: Sequence[Coupon], currency: str) -> list[Discount]:
    taken = [Decimal(0)] * len(items)
    discounts = []
    for coupon in coupons:
        left = {
            index: items[index].amount - taken[index]
            for index in sorted(coupon.eligible)
            if items[index].amount - taken[index] > 0
        }
        # A coupon never takes more than is left to pay: of the lines it is limited to, net of
        # their credits (a proration credit, a negative adjustment), nor of the whole invoice.
        net = min(
            sum((items[index].amount - taken[index] for index in coupon.eligible), Decimal(0)),
            sum((item.amount for item in items), Decimal(0)) - sum(taken, Decimal(0)),
        )
        parts = _discount_parts(coupon, left, max(net, Decimal(0)), currency)
        parts = {index: part for index, part in parts.items() if part}
        if not parts:
            continue
        for index, part in parts.items():
            taken[index] += part
        discounts.append(Discount(coupon.key, sum(parts.values(), Decimal(0)), parts))
    return discounts


def _given_back(discounts: list[Discount], amount: Decimal, currency: str) -> list[Discount]:
    """The discounts less `amount`, taken from the last ones first, each re-spread over its lines."""
    kept = []
    for discount in reversed(discounts):
        back = min(amount, discount.amount)
        amount -= back
        parts = _spread(discount.amount - back, discount.parts, currency)
        if parts:
            kept.append(Discount(discount.key, sum(parts.values(), Decimal(0)), parts))
    return kept[::-1]


def _taxed(items: Sequence[Item], discounts: Sequence[Discount], currency: str) -> Result:
    taken = [Decimal(0)] * len(items)
    for discount in discounts:
        for index, part in discount.parts.items():
            taken[index] += part
    item_taxes = []
    summary: dict[Rate, tuple[Decimal, Decimal]] = {}
    for item, discount in zip(items, taken, strict=True):
        taxable = item.amount - discount
        taxes = []
        for rate in item.rates:
            tax = tax_amount(taxable, rate, currency)
            taxes.append((rate, tax))
            base, levied = summary.get(rate, (Decimal(0), Decimal(0)))
            summary[rate] = (base + taxable, levied + tax)
        item_taxes.append(tuple(taxes))
    return Result(
        subtotal=sum((item.amount for item in items), Decimal(0)),
        discounts=tuple(discounts),
        item_discounts=tuple(taken),
        item_taxes=tuple(item_taxes),
        taxes=tuple(TaxSummary(rate, base, levied) for rate, (base, levied) in summary.items()),
        credits=(),
    )


def tax_amount(taxable: Decimal, rate: Rate, currency: str) -> Decimal:
    """One line's tax at one rate, rounded once, half-up (negative on a negative amount)."""
    with localcontext(_CONTEXT):
        if rate.inclusive:
            return round_money(taxable * rate.percentage / (100 + rate.percentage), currency)
        return round_money(taxable * rate.percentage / 100, currency)


def _discount_parts(
    coupon: Coupon, left: dict[int, Decimal], cap: Decimal, currency: str
) -> dict[int, Decimal]:
    """Each line's share of the coupon, adding up to at most `cap`."""
    if coupon.percent_off is not None:
        parts = {
            index: round_money(amount * coupon.percent_off / 100, currency) for index, amount in left.items()
        }
        if sum(parts.values(), Decimal(0)) <= cap:
            return parts
        return _spread(cap, left, currency)
    return _spread(min(coupon.amount_off or Decimal(0), cap), left, currency)


def _spread(target: Decimal, left: dict[int, Decimal], currency: str) -> dict[int, Decimal]:
    """`target` over the lines in proportion to what is left of them, each part rounded down, the
    cents lost that way to the largest line (the first of equals), then the next largest."""
    base = sum(left.values(), Decimal(0))
    target = min(target, base)
    if target <= 0:
        return {}
    parts = {index: _round_down(target * amount / base, currency) for index, amount in left.items()}
    remainder = target - sum(parts.values(), Decimal(0))
    for index in sorted(left, key=lambda index: (-left[index], index)):
        if remainder <= 0:
            break
        extra = min(remainder, left[index] - parts[index])
        parts[index] += extra
        remainder -= extra
    return parts


def _round_down(amount: Decimal, currency: str) -> Decimal:
    unit = Decimal(1).scaleb(-minor_unit_exponent(currency))
    return amount.quantize(unit, rounding=ROUND_DOWN, context=_CONTEXT)
