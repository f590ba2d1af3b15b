"""Which tax rates apply to an invoice's lines, and the legal note of an untaxed customer.

The rate table is the built-in calculator: for each line, the rates of its charge, else of its
plan, else of the customer, else the project's defaults (the most specific wins; several rates on
one level all apply, e.g. a state and a county sales tax). An exempt or reverse-charge customer
pays none. An external tax service plugs in through the setting `BILLABLE_TAX_CALCULATOR`, the
dotted path of a class with the same `rates` and `note` methods as `RateTable`.
"""

from collections.abc import Sequence
from functools import cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from catalog.models import Charge, Customer, Plan, TaxRate, TaxStatus
from catalog.taxes import tax_rates_default
from invoicing.waterfall import Rate

REVERSE_CHARGE_NOTE = (
    "Reverse charge: the customer accounts for the VAT (Council Directive 2006/112/EC, Article 196)."
)
EXEMPT_NOTE = "Exempt from tax."


class TaxedLine(Protocol):
    plan_id: int | None
    charge_id: int | None


class TaxCalculator(Protocol):
    def rates(self, customer: Customer, lines: Sequence[TaxedLine]) -> list[tuple[Rate, ...]]: ...

    def note(self, customer: Customer) -> str: ...


def as_rate(tax_rate: TaxRate) -> Rate:
    return Rate(
        key=tax_rate.pk,
        name=tax_rate.name,
        percentage=tax_rate.percentage,
        inclusive=tax_rate.inclusive,
        jurisdiction=tax_rate.jurisdiction,
    )


class RateTable:
    """The built-in calculator: the rates set in Billable (module docstring)."""

    def rates(self, customer: Customer, lines: Sequence[TaxedLine]) -> list[tuple[Rate, ...]]:
        if customer.tax_status != TaxStatus.TAXABLE:
            return [() for _ in lines]
        charges = _rates_by_owner(Charge, {line.charge_id for line in lines if line.charge_id})
        plans = _rates_by_owner(Plan, {line.plan_id for line in lines if line.plan_id})
        fallback = tuple(as_rate(rate) for rate in customer.tax_rates.order_by("id")) or tuple(
            as_rate(rate) for rate in tax_rates_default(customer.project).order_by("id")
        )
        return [charges.get(line.charge_id) or plans.get(line.plan_id) or fallback for line in lines]

    def note(self, customer: Customer) -> str:
        if customer.tax_status == TaxStatus.REVERSE_CHARGE:
            vat_id = f" Customer VAT ID: {customer.tax_id}." if customer.tax_id else ""
            return REVERSE_CHARGE_NOTE + vat_id
        if customer.tax_status == TaxStatus.EXEMPT:
            return EXEMPT_NOTE
        return ""


def _rates_by_owner(model: type[Charge] | type[Plan], ids: set[int]) -> dict[int, tuple[Rate, ...]]:
    if not ids:
        return {}
    through = model.tax_rates.through
    owner = f"{model._meta.model_name}_id"
    found: dict[int, list[Rate]] = {}
    for row in through.objects.filter(**{f"{owner}__in": ids}).select_related("taxrate").order_by("id"):
        found.setdefault(getattr(row, owner), []).append(as_rate(row.taxrate))
    return {owner_id: tuple(rates) for owner_id, rates in found.items()}


@cache
def _calculator_class() -> type:
    return import_string(getattr(settings, "BILLABLE_TAX_CALCULATOR", "invoicing.taxes.RateTable"))


def tax_calculator() -> TaxCalculator:
    return _calculator_class()()
