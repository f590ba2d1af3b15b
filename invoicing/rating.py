"""The rating engine: what a quantity of usage, or a share of a period, costs under a charge's pricing.

Pure functions over `Decimal`: no database, no clock, no floats. docs/pricing.md states every rule with
a worked example; in short:

- Tier bounds are inclusive (`up_to: 1000` covers unit 1000, the next tier starts right after) and
  units may be fractional: a tier covers (previous up_to, up_to].
- The first `free_units` are free: tiers, packages and prices apply to the billable quantity
  `max(0, quantity - free_units)`, counted from zero. For `percentage`, free units are the first
  events in time order, which carry no fee at all.
- Nothing billable costs nothing (no tier flat fee, no stairstep step), except the charge minimum,
  unless `bill_flat_fee_at_zero`: then a tiered charge bills tier 1's flat fee (Stripe's behaviour).
- A tier table may end with a bounded tier when `overage_unit_price` is set: units beyond the last
  bound cost that price each, on top of what the tiers charge up to the bound (every model).
- graduated_percentage prices the summed value through tiers whose price is `rate`/100 per unit;
  dynamic bills the sum of the amounts the events carry; percentage's `free_amount` exempts the first
  value summed from the rate.
- A line's amount is rounded once, half-up, to the currency's minor unit, then raised to the
  (rounded) `minimum_amount` if below it; it is never negative.

Intermediate values are exact: sums and products run in a decimal context that raises rather than
round, so a product too long for Decimal's default 28 digits is never silently cut. The only inexact
step is the proration quotient (a fee × 15/31 does not terminate), which is carried to 100
significant digits before the single rounding to the currency.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from itertools import pairwise
from typing import Any, cast

from billing_site.money import round_money
from catalog.pricing import ChargeKind, FeeTiming, PackageRounding, PricingModel

_DIGITS = 100
# Sums, products and integer divisions: any result that would need rounding raises Inexact.
_EXACT = Context(prec=_DIGITS, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])
# The proration quotient and the final rounding to the currency, the two deliberately inexact steps.
_ROUNDED = Context(prec=_DIGITS, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow])

_TIERED = frozenset(
    {PricingModel.GRADUATED, PricingModel.VOLUME, PricingModel.STAIRSTEP, PricingModel.GRADUATED_PERCENTAGE}
)
_GRADUATED = frozenset({PricingModel.GRADUATED, PricingModel.GRADUATED_PERCENTAGE})
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Tier:
    """One price tier: units in (previous up_to, up_to] cost `unit_price` each, plus `flat_fee` once.

    `up_to` None is the open-ended last tier.
    """

    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal
    rate: Decimal | None = None  # graduated_percentage: the tier's percentage (unit_price is then unused)

    @property
    def price(self) -> Decimal:
        """What one unit in the tier costs: `unit_price`, or `rate`/100 of a percentage tier."""
        if self.rate is None:
            return self.unit_price
        with localcontext(_EXACT):
            return self.rate / 100


@dataclass(frozen=True)
class Pricing:
    """The pricing fields of a priced item (plan charge or contract line), as typed values.

    Defaults are the model's defaults. Construction checks what rating relies on (the API validates
    the same and more through `catalog.pricing.clean_pricing`) and raises ValueError otherwise.
    """

    kind: ChargeKind = ChargeKind.USAGE
    pricing_model: PricingModel = PricingModel.PER_UNIT
    unit_price: Decimal = Decimal(0)
    package_size: Decimal | None = None
    package_rounding: PackageRounding = PackageRounding.UP
    percentage_rate: Decimal | None = None
    fixed_fee_per_event: Decimal | None = None
    min_fee_per_event: Decimal | None = None
    max_fee_per_event: Decimal | None = None
    free_units: Decimal = Decimal(0)
    minimum_amount: Decimal = Decimal(0)
    tiers: tuple[Tier, ...] = ()
    timing: FeeTiming = FeeTiming.IN_ARREARS
    prorate: bool = True
    free_amount: Decimal | None = None
    amount_property: str = "amount"
    overage_unit_price: Decimal | None = None
    bill_flat_fee_at_zero: bool = False

    def __post_init__(self) -> None:
        amounts = [
            self.unit_price,
            self.package_size,
            self.percentage_rate,
            self.fixed_fee_per_event,
            self.min_fee_per_event,
            self.max_fee_per_event,
            self.free_units,
            self.minimum_amount,
            self.free_amount,
            self.overage_unit_price,
            *(value for tier in self.tiers for value in (tier.unit_price, tier.flat_fee, tier.rate)),
        ]
        if any(value is not None and value < 0 for value in amounts):
            raise ValueError("prices, fees, sizes and free units must not be negative")
        if self.pricing_model in _TIERED:
            bounds = [tier.up_to for tier in self.tiers]
            bounded = self.overage_unit_price is not None
            if not bounds or (bounds[-1] is None) == bounded or None in bounds[:-1]:
                raise ValueError(
                    f"{self.pricing_model} pricing needs tiers ending with an open-ended one, "
                    "or with a bounded one and an overage_unit_price"
                )
            finite = cast(list[Decimal], [bound for bound in bounds if bound is not None])
            if any(lower >= upper for lower, upper in pairwise([Decimal(0), *finite])):
                raise ValueError("tier bounds must be strictly ascending and above zero")
            percentage = self.pricing_model == PricingModel.GRADUATED_PERCENTAGE
            if any((tier.rate is not None) != percentage for tier in self.tiers):
                raise ValueError("graduated_percentage tiers, and only they, carry a rate")
        if self.pricing_model == PricingModel.PACKAGE and not self.package_size:
            raise ValueError("package pricing needs a positive package_size")
        if self.pricing_model == PricingModel.PERCENTAGE and self.percentage_rate is None:
            raise ValueError("percentage pricing needs a percentage_rate")

    @classmethod
    def from_item(cls, item: Any) -> "Pricing":
        """The pricing of a `catalog.pricing.PricedItem` instance (saved or not).

        Tiers come from the item's JSON (decimal strings, as `clean_tiers` stores them); a missing
        `unit_price` or `flat_fee` in a tier is 0 (a missing `rate` of a graduated_percentage tier
        too). Floats are refused, wherever they appear.
        """
        percentage = item.pricing_model == PricingModel.GRADUATED_PERCENTAGE
        return cls(
            kind=ChargeKind(item.kind),
            pricing_model=PricingModel(item.pricing_model),
            unit_price=_decimal(item.unit_price),
            package_size=_optional_decimal(item.package_size),
            package_rounding=PackageRounding(item.package_rounding),
            percentage_rate=_optional_decimal(item.percentage_rate),
            fixed_fee_per_event=_optional_decimal(item.fixed_fee_per_event),
            min_fee_per_event=_optional_decimal(item.min_fee_per_event),
            max_fee_per_event=_optional_decimal(item.max_fee_per_event),
            free_units=_decimal(item.free_units),
            minimum_amount=_decimal(item.minimum_amount),
            tiers=tuple(
                Tier(
                    up_to=_optional_decimal(tier.get("up_to")),
                    unit_price=_decimal(tier.get("unit_price", 0)),
                    flat_fee=_decimal(tier.get("flat_fee", 0)),
                    rate=_decimal(tier.get("rate", 0)) if percentage else None,
                )
                for tier in item.tiers or ()
            ),
            timing=FeeTiming(item.timing),
            prorate=bool(item.prorate),
            free_amount=_optional_decimal(item.free_amount),
            amount_property=item.amount_property,
            overage_unit_price=_optional_decimal(item.overage_unit_price),
            bill_flat_fee_at_zero=bool(item.bill_flat_fee_at_zero),
        )


@dataclass(frozen=True)
class TierLine:
    """One tier's part of a line, for display: `amount` = `units` × `unit_price` + `flat_fee`, unrounded.

    `tier` is the tier's 1-based position in the pricing; the overage beyond a bounded last tier is
    the position after it (flat fee 0, `unit_price` the overage price). A stairstep line shows
    `unit_price` 0: its step price is the tier's flat fee. A graduated_percentage line shows the
    tier's rate as a price per unit (1 % is 0.01).
    """

    tier: int
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Rating:
    """The priced result for one invoice line.

    - `quantity`: what was measured, as given (usage models); for `percentage`, the number of events.
    - `billable_quantity`: `max(0, quantity - free_units)`, what the price applied to; for
      `percentage`, the events after the free ones.
    - `amount`: THE line amount: `exact_amount` rounded once, half-up, to the currency, raised to the
      rounded `minimum_amount` if below it, never negative.
    - `tiers`: the tier breakdown of graduated, volume and stairstep lines (empty for other models).
    - `minimum_applied`: the minimum raised the amount.
    - `exact_amount`: the amount before rounding and before the minimum.
    - `unit_price`: the one price every billed unit paid, when there is one: per_unit's price, the
      volume tier's price, package's price per package (times `packages`), the fixed fee for a period.
    - `packages`: package lines: the number of packages billed.
    - `total_value`: percentage lines: the sum of the events' values (the rate's base, free events
      included).
    """

    quantity: Decimal
    billable_quantity: Decimal
    amount: Decimal
    tiers: tuple[TierLine, ...]
    minimum_applied: bool
    exact_amount: Decimal
    unit_price: Decimal | None = None
    packages: int | None = None
    total_value: Decimal | None = None


def rate_usage(pricing: Pricing, quantity: Decimal, *, currency: str) -> Rating:
    """Price a period's aggregated usage under a per_unit, graduated, volume, package or stairstep charge.

    - per_unit: billable × unit_price.
    - graduated: each billable unit at the price of the tier it falls in, plus the flat fee of every
      tier reached.
    - volume: every billable unit at the price of the tier the billable total falls in, plus that
      tier's flat fee. (The amount can fall when usage crosses into a cheaper tier.)
    - stairstep: the flat fee of the tier the billable total falls in; tier unit prices are ignored.
    - graduated_percentage: graduated, each tier's unit price being its `rate`/100.
    - overage (a bounded last tier and `overage_unit_price`): the tiers price the units up to the
      last bound as if the total stopped there (volume: all of them at the last tier's price, plus
      its flat fee; stairstep: its flat fee), and each unit beyond costs `overage_unit_price`.
    - `bill_flat_fee_at_zero`: a tiered charge with nothing billable bills tier 1's flat fee.
    - package: ceil (or floor, per package_rounding) of billable / package_size packages × unit_price.

    A negative quantity (a meter correction) bills like zero usage; credits are credit notes.
    """
    if pricing.kind != ChargeKind.USAGE or pricing.pricing_model in (
        PricingModel.PERCENTAGE,
        PricingModel.DYNAMIC,
    ):
        raise ValueError("rate_usage prices usage charges; use rate_percentage, rate_dynamic or rate_fixed")
    tiers: tuple[TierLine, ...] = ()
    unit_price: Decimal | None = None
    packages: int | None = None
    with localcontext(_EXACT):
        billable = max(Decimal(0), quantity - pricing.free_units)
        if pricing.pricing_model == PricingModel.PER_UNIT:
            unit_price = pricing.unit_price
            exact = billable * unit_price
        elif pricing.pricing_model == PricingModel.PACKAGE:
            unit_price = pricing.unit_price
            packages = _packages(billable, pricing)
            exact = packages * unit_price
        else:
            tiers = _tier_lines(pricing, billable)
            exact = sum((line.amount for line in tiers), Decimal(0))
            if pricing.pricing_model == PricingModel.VOLUME and len(tiers) == 1:
                unit_price = tiers[0].unit_price
    return _line(
        pricing,
        quantity=quantity,
        billable=billable,
        exact=exact,
        currency=currency,
        tiers=tiers,
        unit_price=unit_price,
        packages=packages,
    )


def percentage_event_fee(pricing: Pricing, value: Decimal) -> Decimal:
    """One event's fee under a percentage charge, unrounded:
    `percentage_rate`/100 × value + `fixed_fee_per_event`, then clamped to at least
    `min_fee_per_event` and at most `max_fee_per_event` (each optional).

    The same expression, summed over the billed events in SQL, gives `rate_percentage`'s `fees`.
    """
    if pricing.percentage_rate is None:
        raise ValueError("percentage_event_fee needs a percentage_rate")
    with localcontext(_EXACT):
        fee = pricing.percentage_rate / 100 * value + (pricing.fixed_fee_per_event or 0)
        if pricing.min_fee_per_event is not None:
            fee = max(fee, pricing.min_fee_per_event)
        if pricing.max_fee_per_event is not None:
            fee = min(fee, pricing.max_fee_per_event)
    return fee


def rate_percentage(
    pricing: Pricing, *, fees: Decimal, events: int, total_value: Decimal, currency: str
) -> Rating:
    """Price a period under a percentage charge from its aggregates.

    `events` is the number of events in the period and `total_value` the sum of their values (free
    events included); `fees` is the sum of `percentage_event_fee` over the billed events: all but the
    first `free_units` events in time order (a fractional free_units counts its whole part), less
    the `free_amount` allowance (see rate_percentage_events). A negative sum (refund events
    outweighing the rest) bills 0.
    """
    if pricing.pricing_model != PricingModel.PERCENTAGE:
        raise ValueError("rate_percentage prices percentage charges")
    if events < 0:
        raise ValueError("events must not be negative")
    return _line(
        pricing,
        quantity=Decimal(events),
        billable=Decimal(max(0, events - _free_events(pricing))),
        exact=fees,
        currency=currency,
        total_value=total_value,
    )


def rate_percentage_events(pricing: Pricing, values: Sequence[Decimal], *, currency: str) -> Rating:
    """The reference for `rate_percentage`: the same line, from every event's value in time order.

    The free allowance is `free_units` events and `free_amount` of summed value; when both are set,
    whichever is used up first ends both (Lago's rule). While it lasts, an event pays the rate only
    on its value beyond what is left of `free_amount` (with no free amount, on none of it); a free
    event (among the first `free_units`) pays no fixed fee and, owing nothing, no per-event minimum.
    After it, every event pays its full fee. What is used of the free amount is the highest running
    total reached so far, so a refund event does not hand the allowance back.
    """
    free_events, free_amount = _free_events(pricing), pricing.free_amount or Decimal(0)
    with localcontext(_EXACT):
        # `used`: the highest running total of the earlier events (at least 0)
        fees, running, used = Decimal(0), Decimal(0), Decimal(0)
        for number, value in enumerate(values, start=1):
            fees += _allowance_fee(pricing, value, number, used, free_events, free_amount)
            running += value
            used = max(used, running)
        total_value = sum(values, Decimal(0))
    return rate_percentage(pricing, fees=fees, events=len(values), total_value=total_value, currency=currency)


def _allowance_fee(
    pricing: Pricing, value: Decimal, number: int, used: Decimal, free_events: int, free_amount: Decimal
) -> Decimal:
    """One event's fee under the free allowance (see rate_percentage_events); exact context."""
    is_open = (free_events > 0 or free_amount > 0) and (
        (free_events == 0 or number <= free_events) and (free_amount == 0 or used < free_amount)
    )
    if not is_open:
        return percentage_event_fee(pricing, value)
    free_value = value if free_amount == 0 else min(value, free_amount - used)
    free_event = number <= free_events
    if free_event and free_value == value:
        return Decimal(0)
    charged = replace(pricing, fixed_fee_per_event=None) if free_event else pricing
    return percentage_event_fee(charged, value - free_value)


def rate_dynamic(pricing: Pricing, *, quantity: Decimal, amount: Decimal, currency: str) -> Rating:
    """Price a period under a dynamic charge: `amount` is the sum of the amounts its events carried
    (in `amount_property`), billed as is; `quantity`, the meter's figure, is shown beside it.

    Rounded once for the line, half-up; a negative sum (corrections outweighing the rest) bills 0.
    """
    if pricing.pricing_model != PricingModel.DYNAMIC:
        raise ValueError("rate_dynamic prices dynamic charges")
    return _line(
        pricing, quantity=quantity, billable=max(quantity, Decimal(0)), exact=amount, currency=currency
    )


def prorate(amount: Decimal, *, covered: timedelta, period: timedelta) -> Decimal:
    """`amount` × covered / period, by exact elapsed time (integer microseconds), unrounded.

    The full period returns `amount` itself; otherwise the quotient is carried to 100 significant
    digits. Time zones and daylight-saving changes are the caller's: pass real elapsed durations
    (the difference of two aware datetimes), so a 743-hour March in Paris is 743 hours.
    """
    covered_us, period_us = covered // _ONE_MICROSECOND, period // _ONE_MICROSECOND
    if period_us <= 0 or not 0 <= covered_us <= period_us:
        raise ValueError("prorate needs 0 <= covered <= period and a positive period")
    if covered_us == period_us:
        return amount
    with localcontext(_EXACT):
        numerator = amount * covered_us
    with localcontext(_ROUNDED):
        return numerator / period_us


def rate_fixed(amount: Decimal, *, covered: timedelta, period: timedelta, currency: str) -> Rating:
    """Price a fixed fee (a plan's base fee, a fixed charge) for the part of its period covered.

    A partial period (late start, plan change, cancellation) pays its exact share of time; the
    result is rounded once. `quantity` and `billable_quantity` are 1 (one period's fee). A fixed
    charge's fee is its `unit_price`: `rate_fixed(pricing.unit_price, ...)`.
    """
    if amount < 0:
        raise ValueError("a fixed fee must not be negative; credits are credit notes")
    exact = prorate(amount, covered=covered, period=period)
    return Rating(
        quantity=Decimal(1),
        billable_quantity=Decimal(1),
        amount=_round(exact, currency),
        tiers=(),
        minimum_applied=False,
        exact_amount=exact,
        unit_price=amount,
    )


def invoice_total(amounts: Iterable[Decimal]) -> Decimal:
    """The sum of line amounts already rounded to the currency, exactly, with no further rounding."""
    with localcontext(_EXACT):
        return sum(amounts, Decimal(0))


def _line(
    pricing: Pricing,
    *,
    quantity: Decimal,
    billable: Decimal,
    exact: Decimal,
    currency: str,
    tiers: tuple[TierLine, ...] = (),
    unit_price: Decimal | None = None,
    packages: int | None = None,
    total_value: Decimal | None = None,
) -> Rating:
    rounded = max(_round(exact, currency), Decimal(0))
    minimum = _round(pricing.minimum_amount, currency)
    return Rating(
        quantity=quantity,
        billable_quantity=billable,
        amount=max(rounded, minimum),
        tiers=tiers,
        minimum_applied=minimum > rounded,
        exact_amount=exact,
        unit_price=unit_price,
        packages=packages,
        total_value=total_value,
    )


def _tier_lines(pricing: Pricing, billable: Decimal) -> tuple[TierLine, ...]:
    """The tiers a billable quantity is charged in, for the tiered models, plus any overage line.

    Called in the exact context, like everything that multiplies or adds below.
    """
    if billable <= 0:
        if pricing.bill_flat_fee_at_zero:
            first = pricing.tiers[0]
            price = Decimal(0) if pricing.pricing_model == PricingModel.STAIRSTEP else first.price
            return (_tier_line(1, Decimal(0), price, first.flat_fee),)
        return ()
    last_bound = pricing.tiers[-1].up_to
    overage = Decimal(0) if last_bound is None else max(Decimal(0), billable - last_bound)
    in_tiers = billable - overage
    if pricing.pricing_model in _GRADUATED:
        lines = _graduated(pricing.tiers, in_tiers)
    else:
        index, tier = next(
            (index, tier)
            for index, tier in enumerate(pricing.tiers, start=1)
            if tier.up_to is None or in_tiers <= tier.up_to
        )
        unit_price = tier.unit_price if pricing.pricing_model == PricingModel.VOLUME else Decimal(0)
        lines = (_tier_line(index, in_tiers, unit_price, tier.flat_fee),)
    if overage:
        price = cast(Decimal, pricing.overage_unit_price)  # Pricing refuses a bounded table without one
        lines = (*lines, _tier_line(len(pricing.tiers) + 1, overage, price, Decimal(0)))
    return lines


def _graduated(tiers: tuple[Tier, ...], billable: Decimal) -> tuple[TierLine, ...]:
    lines: list[TierLine] = []
    lower = Decimal(0)
    for index, tier in enumerate(tiers, start=1):
        upper = billable if tier.up_to is None else min(billable, tier.up_to)
        lines.append(_tier_line(index, upper - lower, tier.price, tier.flat_fee))
        if tier.up_to is None or billable <= tier.up_to:
            break
        lower = tier.up_to
    return tuple(lines)


def _tier_line(index: int, units: Decimal, unit_price: Decimal, flat_fee: Decimal) -> TierLine:
    return TierLine(index, units, unit_price, flat_fee, units * unit_price + flat_fee)


def _packages(billable: Decimal, pricing: Pricing) -> int:
    size = cast(Decimal, pricing.package_size)  # Pricing refuses package pricing without a size
    whole, remainder = divmod(billable, size)
    partial = remainder > 0 and pricing.package_rounding == PackageRounding.UP
    return int(whole) + int(partial)


def _free_events(pricing: Pricing) -> int:
    return int(pricing.free_units)


def _round(amount: Decimal, currency: str) -> Decimal:
    with localcontext(_ROUNDED):
        return round_money(amount, currency)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"expected a Decimal, an int or a decimal string, got {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _optional_decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else _decimal(value)
