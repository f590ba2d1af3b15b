"""Every invoice equals an independent recomputation, to the minor unit.

For random plans (currency, base fee, aggregation, pricing model, tiers, free units, minimum,
minimum commitment), random waterfalls (a percentage or fixed-amount coupon used once or forever,
an inclusive or exclusive tax rate, prepaid credits) and random event streams (some reported
after their period was invoiced), usage goes in through the API, two periods are closed, and each
invoice's lines and totals are compared with a plain-Python recomputation over the raw events.
The recomputation below shares no code with invoicing: it prices with Fractions and rounds
half-up (and down, for the parts of a fixed discount) by hand.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import time_machine
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from catalog.models import CouponRedemption, Plan
from invoicing.billing import billing_close
from invoicing.models import BillingReason, Invoice, LineType
from tests.accounts.factories import ProjectFactory, make_api_key
from tests.catalog.factories import (
    CouponFactory,
    CustomerFactory,
    MeterFactory,
    TaxRateFactory,
    make_plan,
    subscribe,
)
from tests.invoicing.factories import credits_granted

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)
EXPONENTS = {"USD": 2, "JPY": 0, "KWD": 3}


# --- the independent recomputation ----------------------------------------------------------------


def round_half_up(value: Fraction, exponent: int) -> Fraction:
    scaled = value * 10**exponent
    whole = math.floor(abs(scaled) + Fraction(1, 2))
    return Fraction(whole if scaled >= 0 else -whole, 10**exponent)


def round_down(value: Fraction, exponent: int) -> Fraction:
    return Fraction(math.floor(value * 10**exponent), 10**exponent)


def price(plan: dict, quantity: Fraction, exponent: int) -> tuple[Fraction, Fraction]:
    """The usage line and the charge minimum's true-up."""
    billable = max(Fraction(0), quantity - plan["free_units"])
    model, tiers = plan["model"], plan["tiers"]
    if model == "per_unit":
        total = billable * plan["unit_price"]
    elif model == "package":
        total = math.ceil(billable / plan["package_size"]) * plan["unit_price"]
    elif billable == 0:
        total = Fraction(0)
    elif model == "graduated":
        total, lower = Fraction(0), Fraction(0)
        for up_to, unit_price, flat_fee in tiers:
            upper = billable if up_to is None else min(billable, up_to)
            total += (upper - lower) * unit_price + flat_fee
            if up_to is None or billable <= up_to:
                break
            lower = up_to
    else:  # volume, stairstep: the tier the total falls in
        up_to, unit_price, flat_fee = next(t for t in tiers if t[0] is None or billable <= t[0])
        total = (billable * unit_price if model == "volume" else 0) + flat_fee
    used = max(round_half_up(total, exponent), Fraction(0))
    return used, max(round_half_up(plan["minimum"], exponent) - used, Fraction(0))


def spread(target: Fraction, over: dict[int, Fraction], exponent: int) -> dict[int, Fraction]:
    """`target` in proportion to `over`, each part rounded down, the cents left to the largest."""
    base = sum(over.values())
    target = min(target, base)
    parts = {i: round_down(target * amount / base, exponent) for i, amount in over.items()}
    remainder = target - sum(parts.values())
    for i in sorted(over, key=lambda i: (-over[i], i)):
        extra = min(remainder, over[i] - parts[i])
        parts[i] += extra
        remainder -= extra
    return parts


def taxed(items: list[Fraction], discounts: dict[int, Fraction], rate: dict, exponent: int):
    share = rate["percentage"] / (100 + rate["percentage"]) if rate["inclusive"] else rate["percentage"] / 100
    tax = sum(
        round_half_up((amount - discounts.get(i, 0)) * share, exponent) for i, amount in enumerate(items)
    )
    return tax, sum(items) - sum(discounts.values()) + (0 if rate["inclusive"] else tax)


def waterfall(items: list[Fraction], extras: dict, exponent: int, coupon_used: bool) -> dict:
    """Discount, tax and credits over the invoice's fee and usage lines, in their order."""
    coupon, rate = extras["coupon"], extras["tax"]
    discounts: dict[int, Fraction] = {}
    positive = {i: amount for i, amount in enumerate(items) if amount > 0}
    if coupon is not None and not (coupon["once"] and coupon_used) and positive:
        cap = max(sum(items), Fraction(0))  # never more than is left to pay
        if coupon["percent_off"] is not None:
            discounts = {
                i: round_half_up(a * coupon["percent_off"] / 100, exponent) for i, a in positive.items()
            }
            if sum(discounts.values()) > cap:
                discounts = spread(cap, positive, exponent)
        else:
            discounts = spread(min(coupon["amount_off"], cap), positive, exponent)
    tax, total = taxed(items, discounts, rate, exponent)
    # A total taken below what it was without the coupon (tax rounding) is given back by it.
    floor = min(taxed(items, {}, rate, exponent)[1], Fraction(0))
    original, given_back = dict(discounts), Fraction(0)
    while total < floor:
        given_back += floor - total
        discounts = spread(max(sum(original.values()) - given_back, Fraction(0)), original, exponent)
        tax, total = taxed(items, discounts, rate, exponent)
    credits = min(extras["credits"], max(total, Fraction(0)))
    extras["credits"] -= credits
    return {"discount": sum(discounts.values()), "tax": tax, "total": total, "credits": credits}


def aggregate(aggregation: str, values: list[int]) -> Fraction:
    if not values:
        return Fraction(0)
    return Fraction({"sum": sum(values), "count": len(values), "max": max(values)}[aggregation])


# --- random plans and usage -----------------------------------------------------------------------


@dataclass
class Event:
    day: int  # days after 1 January
    value: int
    late: bool  # January usage reported after January was invoiced

    @property
    def timestamp(self) -> datetime:
        return JAN_1 + timedelta(days=self.day, hours=12)


def decimals(max_value: int, places: int):
    return st.integers(min_value=0, max_value=max_value * 10**places).map(lambda n: Fraction(n, 10**places))


@st.composite
def plans(draw):
    model = draw(st.sampled_from(["per_unit", "graduated", "volume", "package", "stairstep"]))
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=2000), min_size=1, max_size=3)))
    tiers = [(Fraction(b), draw(decimals(2, 4)), draw(decimals(20, 2))) for b in bounds]
    tiers.append((None, draw(decimals(2, 4)), draw(decimals(20, 2))))
    return {
        "currency": draw(st.sampled_from(sorted(EXPONENTS))),
        "aggregation": draw(st.sampled_from(["sum", "count", "max"])),
        "model": model,
        "base_fee": draw(decimals(200, 2)),
        "unit_price": draw(decimals(3, 6)),
        "package_size": Fraction(draw(st.integers(min_value=1, max_value=300))),
        "free_units": Fraction(draw(st.integers(min_value=0, max_value=100))),
        "minimum": draw(decimals(30, 2)),
        "tiers": tiers if model in ("graduated", "volume", "stairstep") else [],
    }


events = st.lists(
    st.builds(
        Event,
        day=st.integers(min_value=0, max_value=58),
        value=st.integers(min_value=0, max_value=900),
        late=st.booleans(),
    ),
    max_size=25,
)


def _decimal(value: Fraction) -> str:
    return str(Decimal(value.numerator) / Decimal(value.denominator))


def _charge(plan: dict, meter) -> dict:
    charge = {
        "meter": meter,
        "name": "Usage",
        "pricing_model": plan["model"],
        "free_units": _decimal(plan["free_units"]),
        "minimum_amount": _decimal(plan["minimum"]),
        "unit_price": _decimal(plan["unit_price"]),
    }
    if plan["model"] == "package":
        charge["package_size"] = _decimal(plan["package_size"])
    if plan["tiers"]:
        charge["unit_price"] = "0"
        charge["tiers"] = [
            {
                "up_to": None if up_to is None else _decimal(up_to),
                "unit_price": _decimal(p),
                "flat_fee": _decimal(f),
            }
            for up_to, p, f in plan["tiers"]
        ]
    return charge


@st.composite
def waterfalls(draw):
    kind = draw(st.sampled_from(["none", "percentage", "fixed_amount"]))
    coupon = None
    if kind != "none":
        coupon = {
            "once": draw(st.booleans()),
            "percent_off": draw(decimals(100, 2).filter(lambda p: p > 0)) if kind == "percentage" else None,
            "amount_off": draw(decimals(80, 0)) if kind == "fixed_amount" else None,
        }
    return {
        "coupon": coupon,
        "tax": {"percentage": draw(decimals(30, 3)), "inclusive": draw(st.booleans())},
        "credits": draw(decimals(150, 0)),
        "commitment": draw(st.sampled_from([Fraction(0), draw(decimals(150, 0))])),
    }


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=plans(), extras=waterfalls(), stream=events)
def test_every_invoice_equals_an_independent_recomputation(db, plan, extras, stream):
    exponent = EXPONENTS[plan["currency"]]
    with transaction.atomic():
        invoices = _bill(plan, extras, stream)
        january = [e.value for e in stream if e.day < 31]
        on_time_january = [e.value for e in stream if e.day < 31 and not e.late]
        february = [e.value for e in stream if e.day >= 31]
        base = round_half_up(plan["base_fee"], exponent)
        usage_jan, minimum_jan = price(plan, aggregate(plan["aggregation"], on_time_january), exponent)
        usage_feb, minimum_feb = price(plan, aggregate(plan["aggregation"], february), exponent)
        late = sum(price(plan, aggregate(plan["aggregation"], january), exponent)) - usage_jan - minimum_jan
        commitment = round_half_up(extras["commitment"], exponent)
        commit_jan = max(commitment - base - usage_jan - minimum_jan, Fraction(0))
        commit_feb = max(commitment - base - usage_feb - minimum_feb, Fraction(0))
        # Late January usage fills January's commitment before it costs more.
        recommit_jan = 0
        if commit_jan and late:
            recommit_jan = max(commitment - base - usage_jan - minimum_jan - late, Fraction(0)) - commit_jan

        expected = {
            "opening": {LineType.BASE_FEE: [base]},
            "january": {
                LineType.USAGE: [usage_jan],
                LineType.MINIMUM: [minimum_jan],
                LineType.COMMITMENT: [commit_jan],
                LineType.BASE_FEE: [base],
            },
            "february": {
                LineType.USAGE: [usage_feb],
                LineType.MINIMUM: [minimum_feb],
                LineType.COMMITMENT: [amount for amount in (recommit_jan, commit_feb) if amount],
                LineType.BASE_FEE: [base],
            },
        }
        items = {
            "opening": [base],
            "january": [usage_jan, minimum_jan, commit_jan, base],
            "february": [usage_feb, minimum_feb, late, recommit_jan, commit_feb, base],
        }
        if late:
            expected["february"][LineType.LATE_USAGE if late > 0 else LineType.CREDIT] = [late]
        coupon_used = False
        for name, invoice in invoices.items():
            steps = waterfall([amount for amount in items[name] if amount], extras, exponent, coupon_used)
            coupon_used = coupon_used or steps["discount"] > 0
            expected[name].update(
                {
                    LineType.DISCOUNT: [-steps["discount"]],
                    LineType.TAX: [steps["tax"]],
                    LineType.PREPAID_CREDIT: [-steps["credits"]],
                }
            )
            found: dict[str, list[Fraction]] = {}
            for line in invoice.lines.all():
                found.setdefault(line.type, []).append(Fraction(line.amount))
            wanted = {
                kind: amounts
                for kind, amounts in expected[name].items()
                if any(amounts) or kind == LineType.USAGE
            }
            found = {
                kind: amounts for kind, amounts in found.items() if any(amounts) or kind == LineType.USAGE
            }
            assert found == wanted, (name, plan, extras, stream)
            assert Fraction(invoice.subtotal) == sum(items[name])
            assert Fraction(invoice.discount) == steps["discount"]
            assert Fraction(invoice.tax) == steps["tax"]
            assert Fraction(invoice.total) == steps["total"]
            assert Fraction(invoice.credits_applied) == steps["credits"]
        transaction.set_rollback(True)


def _bill(plan: dict, extras: dict, stream: list[Event]) -> dict[str, Invoice]:
    project = ProjectFactory(currency=plan["currency"])
    TaxRateFactory(
        project=project,
        percentage=_decimal(extras["tax"]["percentage"]),
        inclusive=extras["tax"]["inclusive"],
        is_default=True,
    )
    meter = MeterFactory(project=project, code="units", aggregation=plan["aggregation"])
    billed = make_plan(
        project,
        base_fee=_decimal(plan["base_fee"]),
        currency=plan["currency"],
        charges=[_charge(plan, meter)],
    )
    Plan.objects.filter(pk=billed.pk).update(minimum_commitment=_decimal(extras["commitment"]))
    billed.refresh_from_db()
    customer = CustomerFactory(project=project, external_id="acct", currency=plan["currency"])
    if extras["coupon"] is not None:
        coupon = extras["coupon"]
        CouponRedemption.objects.create(
            project=project,
            customer=customer,
            coupon=CouponFactory(
                project=project,
                kind="percentage" if coupon["percent_off"] is not None else "fixed_amount",
                percent_off=None if coupon["percent_off"] is None else _decimal(coupon["percent_off"]),
                amount_off={plan["currency"]: _decimal(coupon["amount_off"])} if coupon["amount_off"] else {},
                duration="once" if coupon["once"] else "forever",
            ),
        )
    if extras["credits"]:
        credits_granted(customer, plan["currency"], _decimal(extras["credits"]), at=JAN_1 - timedelta(days=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(project)[1]}")

    def send(batch: list[Event], at: datetime) -> None:
        if batch:
            with time_machine.travel(at, tick=False):
                body = [
                    {
                        "customer": "acct",
                        "meter": "units",
                        "value": e.value,
                        "timestamp": e.timestamp.isoformat(),
                    }
                    for e in batch
                ]
                assert client.post("/v1/usage", body, format="json").status_code == 200

    with time_machine.travel(JAN_1, tick=False):
        subscription = subscribe(customer, billed, starts_at=JAN_1)
        billing_close(as_of=JAN_1)
    send([e for e in stream if e.day < 31 and not e.late], FEB_1 - timedelta(hours=1))
    with time_machine.travel(FEB_1 + timedelta(hours=1), tick=False):
        billing_close(as_of=FEB_1 + timedelta(hours=1))
    send([e for e in stream if e.day >= 31 or e.late], MAR_1 - timedelta(hours=1))
    with time_machine.travel(MAR_1 + timedelta(hours=1), tick=False):
        billing_close(as_of=MAR_1 + timedelta(hours=1))
    cycles = Invoice.objects.filter(
        subscription=subscription, billing_reason=BillingReason.SUBSCRIPTION_CYCLE
    )
    return {
        "opening": Invoice.objects.get(
            subscription=subscription, billing_reason=BillingReason.SUBSCRIPTION_START
        ),
        "january": cycles.get(period_start=JAN_1),
        "february": cycles.get(period_start=FEB_1),
    }
