"""The waterfall on an invoice: its discount, tax and prepaid-credit lines, and its totals.

invoicing/waterfall.py does the arithmetic; this module feeds it what applies to the invoice
(invoicing/discounts.py, invoicing/taxes.py, invoicing/credits.py) and turns the result into
lines. A stored invoice is recomposed whenever its fee and usage lines change (rebuild, manual
adjustment) and once more when it is issued, with the coupons and the wallet locked, so that
what it takes from them is what they still hold.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing_site.money import round_money
from catalog.models import CouponKind, CouponRedemption
from invoicing.credits import credit_blocks, wallet_lock
from invoicing.discounts import invoice_coupons
from invoicing.lines import LineDraft
from invoicing.models import WATERFALL_TYPES, BillingReason, CreditGrant, Invoice, InvoiceLine, LineType
from invoicing.taxes import TaxedLine, tax_calculator
from invoicing.waterfall import Credit, Item, Result, compose

# Waterfall lines come after every fee, usage and manual line.
WATERFALL_POSITION = 100_000


@dataclass
class Waterfall:
    result: Result
    lines: list[LineDraft]  # discount, tax and prepaid-credit lines
    note: str


class _Line:
    """The part of a fee or usage line (stored or computed) the waterfall reads."""

    def __init__(self, line: InvoiceLine | LineDraft) -> None:
        self.amount = line.amount
        self.plan_id = line.plan_id
        self.charge_id = line.charge_id


def waterfall_for(
    invoice: Invoice, lines: Sequence[InvoiceLine | LineDraft], *, lock: bool, at: datetime | None = None
) -> Waterfall:
    """The waterfall of `invoice` over its fee and usage `lines` (which get their discount and
    tax set). `lock` (inside a transaction) locks the coupons' redemptions and the wallet first."""
    items: list[TaxedLine] = [_Line(line) for line in lines]
    customer, currency = invoice.customer, invoice.currency
    if invoice.billing_reason == BillingReason.CREDIT_PURCHASE:
        # Credits are taxed when they pay for usage, after tax: a purchase is neither taxed,
        # discounted nor paid with credits.
        rates, coupons, blocks, note = [() for _ in items], [], [], ""
    else:
        calculator = tax_calculator()
        rates, note = calculator.rates(customer, items), calculator.note(customer)
        coupons = invoice_coupons(invoice, items, lock=lock)
        if lock:
            wallet_lock(customer=customer, currency=currency)
        blocks = credit_blocks(customer=customer, currency=currency, at=at or timezone.now())
    result = compose(
        [Item(item.amount, item_rates) for item, item_rates in zip(items, rates, strict=True)],
        [applicable.coupon for applicable in coupons],
        [Credit(block.grant, block.balance) for block in blocks],
        currency=currency,
    )
    for line, discount, taxes in zip(lines, result.item_discounts, result.item_taxes, strict=True):
        line.discount_amount = discount
        line.tax_amount = sum((tax for _, tax in taxes), Decimal(0))
        line.taxes = [
            {
                "tax_rate": rate.key,
                "name": rate.name,
                "percentage": str(rate.percentage),
                "inclusive": rate.inclusive,
                "jurisdiction": rate.jurisdiction,
                "amount": str(tax),
            }
            for rate, tax in taxes
        ]
    redemptions = {applicable.redemption.pk: applicable.redemption for applicable in coupons}
    return Waterfall(result, _waterfall_lines(invoice, result, redemptions), note)


def _waterfall_lines(invoice: Invoice, result: Result, redemptions: dict) -> list[LineDraft]:
    period = {"period_start": invoice.period_start, "period_end": invoice.period_end}
    lines = []
    for discount in result.discounts:
        redemption: CouponRedemption = redemptions[discount.key]
        lines.append(
            LineDraft(
                type=LineType.DISCOUNT,
                description=f"Discount: {_coupon_label(redemption, invoice.currency)}",
                amount=-discount.amount,
                coupon_redemption=redemption,
                **period,
            )
        )
    for summary in result.taxes:
        rate = summary.rate
        label = f"{rate.name} {rate.percentage.normalize():f} %"
        if rate.jurisdiction:
            label += f" ({rate.jurisdiction})"
        lines.append(
            LineDraft(
                type=LineType.TAX,
                description=f"{label}, included" if rate.inclusive else label,
                amount=summary.amount,
                tax_rate_id=rate.key,
                taxable_amount=summary.taxable,
                tax_inclusive=rate.inclusive,
                **period,
            )
        )
    for grant, amount in result.credits:
        grant: CreditGrant
        lines.append(
            LineDraft(
                type=LineType.PREPAID_CREDIT,
                description=f"Prepaid credits{f': {grant.name}' if grant.name else ''}",
                amount=-amount,
                credit_grant=grant,
                **period,
            )
        )
    return lines


def _coupon_label(redemption: CouponRedemption, currency: str) -> str:
    coupon = redemption.coupon
    if coupon.kind == CouponKind.PERCENTAGE:
        return f"{coupon.name} ({coupon.percent_off.normalize():f} %)"
    return f"{coupon.name} ({round_money(Decimal(coupon.amount_off[currency]), currency)} {currency})"


def invoice_totals_set(invoice: Invoice, waterfall: Waterfall) -> None:
    result = waterfall.result
    invoice.subtotal, invoice.discount, invoice.tax = result.subtotal, result.discount, result.tax
    invoice.total, invoice.credits_applied = result.total, result.credits_applied
    invoice.tax_note = waterfall.note


def invoice_compose(*, invoice: Invoice, lock: bool = False, at: datetime | None = None) -> Invoice:
    """Recompose a stored invoice's waterfall from its fee and usage lines, and save its totals.

    Runs in the caller's transaction, with the invoice locked by the caller.
    """
    lines = list(invoice.lines.exclude(type__in=WATERFALL_TYPES).order_by("position", "id"))
    invoice.lines.filter(type__in=WATERFALL_TYPES).delete()
    return invoice_lines_compose(invoice=invoice, stored=lines, new=[], lock=lock, at=at)


def invoice_lines_compose(
    *,
    invoice: Invoice,
    stored: list[InvoiceLine],
    new: list[InvoiceLine],
    lock: bool = False,
    at: datetime | None = None,
) -> Invoice:
    """Compose the waterfall over an invoice's fee and usage lines, `stored` (saved) and `new` (not
    yet), when it has no waterfall lines stored; save what it sets on the stored ones, insert the
    new ones with it in the same statement as the waterfall lines, and save the totals. A rebuild
    thus writes its lines once instead of inserting, reading back and updating them.

    Runs in the caller's transaction, with the invoice locked by the caller.
    """
    # The order invoice_compose reads them in: the waterfall allocates discounts line by line.
    lines = sorted([*stored, *new], key=lambda line: (line.position, line.pk or 0))
    waterfall = waterfall_for(invoice, lines, lock=lock, at=at)
    if stored:
        InvoiceLine.objects.bulk_update(stored, ["discount_amount", "tax_amount", "taxes"])
    added = [line.to_line(invoice, WATERFALL_POSITION + index) for index, line in enumerate(waterfall.lines)]
    InvoiceLine.objects.bulk_create([*new, *added])
    invoice_totals_set(invoice, waterfall)
    invoice.save(
        update_fields=["subtotal", "discount", "tax", "total", "credits_applied", "tax_note", "updated_at"]
    )
    return invoice
