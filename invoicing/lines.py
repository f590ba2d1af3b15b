"""An invoice line as computed, before it is saved (or shown in a preview)."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from catalog.models import Charge, CouponRedemption, Plan
from invoicing.models import CreditGrant, Invoice, InvoiceLine


@dataclass
class LineDraft:
    """A computed invoice line. Fee and usage lines carry the discount and tax the waterfall put
    on them; waterfall lines (discount, tax, prepaid credit) what they stand for."""

    type: str
    description: str
    period_start: datetime
    period_end: datetime
    amount: Decimal
    quantity: Decimal = Decimal(1)
    unit_price: Decimal | None = None
    plan: Plan | None = None
    charge: Charge | None = None
    tiers: list[dict] = field(default_factory=list)
    cumulative_quantity: Decimal | None = None
    original_invoice: Invoice | None = None
    discount_amount: Decimal = Decimal(0)
    tax_amount: Decimal = Decimal(0)
    taxes: list[dict] = field(default_factory=list)
    coupon_redemption: CouponRedemption | None = None
    tax_rate_id: int | None = None
    taxable_amount: Decimal | None = None
    tax_inclusive: bool = False
    credit_grant: CreditGrant | None = None

    @property
    def meter_id(self) -> int | None:
        return self.charge.meter_id if self.charge else None

    @property
    def plan_id(self) -> int | None:
        return self.plan.pk if self.plan else None

    @property
    def charge_id(self) -> int | None:
        return self.charge.pk if self.charge else None

    def to_line(self, invoice: Invoice, position: int) -> InvoiceLine:
        return InvoiceLine(
            invoice=invoice,
            type=self.type,
            description=self.description[:300],
            plan=self.plan,
            charge=self.charge,
            meter_id=self.meter_id,
            period_start=self.period_start,
            period_end=self.period_end,
            quantity=self.quantity,
            unit_price=self.unit_price,
            amount=self.amount,
            tiers=self.tiers,
            cumulative_quantity=self.cumulative_quantity,
            original_invoice=self.original_invoice,
            discount_amount=self.discount_amount,
            tax_amount=self.tax_amount,
            taxes=self.taxes,
            coupon_redemption=self.coupon_redemption,
            tax_rate_id=self.tax_rate_id,
            taxable_amount=self.taxable_amount,
            tax_inclusive=self.tax_inclusive,
            credit_grant=self.credit_grant,
            position=position,
        )
