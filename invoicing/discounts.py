"""Which coupons discount an invoice, and by how much before they are spread over its lines.

A redemption applies to the invoices of its subscription (or of every subscription of its
customer) while it lasts: `once` for one invoice, `repeating` for `duration_periods` invoices,
`forever` until removed. An invoice counts as having used it when it carries a discount line of
it and is issued or held for review (a voided one gives it back). A fixed amount is in the
invoice's currency (a coupon without an amount in that currency does not apply) and is prorated
with the period: a cycle invoice closing a partial period, or an opening invoice billing part of
the first period, takes the same share of the amount as of the period, rounded half-up once.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db.models import Count

from billing_site.money import round_money
from catalog.coupons import coupon_redemptions_active
from catalog.models import CouponDuration, CouponKind, CouponRedemption
from invoicing.models import ISSUED_STATUSES, BillingReason, Invoice, InvoiceLine, InvoiceStatus, LineType
from invoicing.taxes import TaxedLine
from invoicing.waterfall import Coupon
from subscriptions.selectors import nominal_period

# Invoices that have used a coupon for good (a draft has not yet; a voided one gave it back).
USING_STATUSES = (*ISSUED_STATUSES, InvoiceStatus.PENDING_REVIEW)


@dataclass(frozen=True)
class Applicable:
    redemption: CouponRedemption
    coupon: Coupon


def invoice_coupons(invoice: Invoice, lines: Sequence[TaxedLine], *, lock: bool) -> list[Applicable]:
    """The coupons that discount `invoice` (whose fee and usage lines are `lines`), in the order
    they were applied. `lock` takes the redemptions' rows first (issuing: two invoices of one
    customer cannot both use a `once` coupon); it needs a transaction."""
    if invoice.subscription_id is None:
        return []
    redemptions = coupon_redemptions_active(subscription=invoice.subscription)
    if lock:
        list(CouponRedemption.objects.select_for_update().filter(pk__in=[r.pk for r in redemptions]))
    used = _invoices_used([redemption.pk for redemption in redemptions], exclude=invoice)
    fraction = None
    applicable = []
    for redemption in redemptions:
        coupon = redemption.coupon
        if not _lasts(coupon, used.get(redemption.pk, 0)):
            continue
        plans = {plan.pk for plan in coupon.plans.all()}
        charges = {charge.pk for charge in coupon.charges.all()}
        eligible = frozenset(
            index
            for index, line in enumerate(lines)
            if not (plans or charges) or line.plan_id in plans or line.charge_id in charges
        )
        if coupon.kind == CouponKind.PERCENTAGE:
            spec = Coupon(key=redemption.pk, eligible=eligible, percent_off=coupon.percent_off)
        else:
            amount = coupon.amount_off.get(invoice.currency)
            if amount is None:
                continue
            if fraction is None:
                fraction = period_fraction(invoice)
            prorated = round_money(Decimal(amount) * fraction, invoice.currency)
            spec = Coupon(key=redemption.pk, eligible=eligible, amount_off=prorated)
        applicable.append(Applicable(redemption, spec))
    return applicable


def _lasts(coupon, used: int) -> bool:
    if coupon.duration == CouponDuration.ONCE:
        return used < 1
    if coupon.duration == CouponDuration.REPEATING:
        return used < (coupon.duration_periods or 0)
    return True


def _invoices_used(redemption_ids: list[int], *, exclude: Invoice) -> dict[int, int]:
    """How many invoices (other than `exclude`) have used each redemption."""
    rows = (
        InvoiceLine.objects.filter(
            coupon_redemption__in=redemption_ids, type=LineType.DISCOUNT, invoice__status__in=USING_STATUSES
        )
        .exclude(invoice_id=exclude.pk)
        .values("coupon_redemption")
        .annotate(invoices=Count("invoice", distinct=True))
        .order_by()
    )
    return {row["coupon_redemption"]: row["invoices"] for row in rows}


def period_fraction(invoice: Invoice) -> Decimal:
    """The share of a whole billing period the invoice bills (1 but for a partial period)."""
    subscription = invoice.subscription
    if invoice.billing_reason == BillingReason.SUBSCRIPTION_CYCLE:
        start, end = invoice.period_start, invoice.period_end
    elif (
        invoice.billing_reason == BillingReason.SUBSCRIPTION_START
        and invoice.period_start == invoice.period_end
    ):
        start = subscription.billed_from
        end = nominal_period(subscription, start).end
    else:
        return Decimal(1)
    nominal = nominal_period(subscription, start)
    whole = nominal.end - nominal.start
    part = min(end, nominal.end) - max(start, nominal.start)
    if part >= whole:
        return Decimal(1)
    unit = timedelta(microseconds=1)
    return Decimal(max(part // unit, 0)) / Decimal(whole // unit)
