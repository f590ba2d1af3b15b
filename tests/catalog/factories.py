"""Catalog, meter and subscription objects for tests, made through the real services where the
service does more than insert a row (plans validate charges, subscriptions open phases)."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import factory
import time_machine
from django.utils import timezone

from accounts.models import Project
from catalog.models import Contract, Coupon, CouponDuration, CouponKind, Customer, Plan, Product, TaxRate
from catalog.services import plan_create
from meters.models import Aggregation, Meter
from subscriptions.models import Subscription
from subscriptions.services import subscription_create


class MeterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Meter

    project = factory.SubFactory("tests.accounts.factories.ProjectFactory")
    code = factory.Sequence(lambda n: f"meter_{n}")
    name = factory.LazyAttribute(lambda m: m.code.replace("_", " ").title())
    aggregation = Aggregation.SUM


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    project = factory.SubFactory("tests.accounts.factories.ProjectFactory")
    code = factory.Sequence(lambda n: f"product_{n}")
    name = factory.LazyAttribute(lambda p: p.code.title())


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    project = factory.SubFactory("tests.accounts.factories.ProjectFactory")
    external_id = factory.Sequence(lambda n: f"customer-{n}")
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.LazyAttribute(lambda c: f"{c.external_id}@example.com")
    currency = factory.LazyAttribute(lambda c: c.project.currency)
    timezone = "UTC"


def make_plan(
    project: Project,
    *,
    charges: list[dict[str, Any]] | None = None,
    base_fee: Decimal | str = "0",
    code: str | None = None,
    **fields: Any,
) -> Plan:
    """A plan through plan_create; charges name meters by Meter or code."""
    product = fields.pop("product", None) or ProductFactory(project=project)
    return plan_create(
        project=project,
        product=product,
        code=code or f"plan_{Plan.objects.count() + 1}",
        name=fields.pop("name", "Test plan"),
        base_fee=base_fee,
        charges=charges or [],
        actor=None,
        **fields,
    )


def subscribe(
    customer: Customer,
    plan: Plan,
    *,
    starts_at: datetime | None = None,
    backdate: bool = False,
    **fields: Any,
) -> Subscription:
    """Subscribe as it would have happened: a start in the past is created at that moment (the
    clock travels there), so its periods are billed one by one as they end. With `backdate`,
    it is created now with its start in the past (a backdated subscription: one catch-up)."""
    if starts_at is not None and starts_at < timezone.now() and not backdate:
        with time_machine.travel(starts_at, tick=False):
            return subscribe(customer, plan, starts_at=starts_at, backdate=True, **fields)
    return subscription_create(
        project=customer.project, customer=customer, plan=plan, starts_at=starts_at, actor=None, **fields
    )


class ContractFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contract

    project = factory.SubFactory("tests.accounts.factories.ProjectFactory")
    title = factory.Sequence(lambda n: f"Master services agreement {n}")
    document = factory.django.FileField(filename="contract.pdf", data=b"%PDF-1.4\n%%EOF\n")
    customer_name = "Initech"
    customer_email = "billing@initech.example"
    currency = factory.LazyAttribute(lambda c: c.project.currency)
    start_date = factory.LazyFunction(lambda: date(2026, 1, 1))


class TaxRateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TaxRate

    project = factory.SubFactory("tests.accounts.factories.ProjectFactory")
    name = "VAT"
    percentage = Decimal("20")
    jurisdiction = "FR"


class CouponFactory(factory.django.DjangoModelFactory):
    """A percentage coupon (20 % off once) unless told otherwise."""

    class Meta:
        model = Coupon

    project = factory.SubFactory("tests.accounts.factories.ProjectFactory")
    code = factory.Sequence(lambda n: f"coupon_{n}")
    name = factory.LazyAttribute(lambda c: c.code.replace("_", " ").title())
    kind = CouponKind.PERCENTAGE
    percent_off = factory.LazyAttribute(lambda c: Decimal("20") if c.kind == CouponKind.PERCENTAGE else None)
    amount_off = factory.LazyAttribute(lambda c: {} if c.kind == CouponKind.PERCENTAGE else {"USD": "10.00"})
    duration = CouponDuration.ONCE


def tier_rows(name: str, *rows: tuple[str, str, str]) -> dict[str, str]:
    """The admin's tiers table as posted: `tier_rows("charges-0-tiers", ("1000", "0", "0"), ("", "0.002", "0"))`
    (up to, unit price, flat fee; an empty "up to" is the open-ended last tier)."""
    columns = ("up_to", "unit_price", "flat_fee")
    return {
        f"{name}-{row}-{column}": value
        for row, cells in enumerate(rows)
        for column, value in zip(columns, cells, strict=True)
    }
