"""A project with three months of history, as a finance team finds it on the first of a month.

Relative to the real clock (the browser's session cookie expires by it): subscriptions began on
the first of the month three months ago; the two closed months were approved and issued then
(one invoice of the earlier month has been paid); this month's close has just put last month's
invoices in the review queue; the current month is a draft collecting usage.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import time_machine
from django.utils import timezone

from accounts.models import Project, Role
from catalog.models import Contract, ContractLine, Customer
from invoicing.billing import billing_close
from invoicing.models import Invoice, InvoiceStatus
from invoicing.services import invoice_approve
from meters.services import usage_ingest
from payments.services import payment_record
from tests.accounts.factories import MembershipFactory, ProjectFactory
from tests.catalog.factories import ContractFactory, CustomerFactory, MeterFactory, make_plan, subscribe


@dataclass
class Month:
    project: Project
    initech: Customer
    globex: Customer
    contract: Contract
    billing_admin: object
    viewer: object


def month_start(moment: datetime, months_back: int = 0) -> datetime:
    year, month = moment.year, moment.month - months_back
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=UTC)


def backoffice_month() -> Month:
    now = timezone.now()
    first = [month_start(now, back) for back in (3, 2, 1, 0)]
    project = ProjectFactory(name="Acme Cloud", invoice_number_prefix="ACME", invoice_delivery="review")
    calls = MeterFactory(project=project, code="api_calls", name="API calls", unit="calls")
    plan = make_plan(
        project,
        name="Growth",
        base_fee="49",
        charges=[
            {
                "meter": calls,
                "name": "API calls",
                "pricing_model": "graduated",
                "tiers": [
                    {"up_to": 10000, "unit_price": "0"},
                    {"up_to": None, "unit_price": "0.0015"},
                ],
            }
        ],
    )
    initech = CustomerFactory(project=project, name="Initech", external_id="initech", email="ap@initech.example",
                              billing_address={"line1": "4120 Freidrich Lane", "city": "Austin",
                                               "postal_code": "78744", "country": "US"})  # fmt: skip
    globex = CustomerFactory(
        project=project, name="Globex", external_id="globex", email="billing@globex.example"
    )
    for customer in (initech, globex):
        subscribe(customer, plan, starts_at=first[0])
    monthly_calls = {initech: (18_500, 24_300, 31_200, 12_040), globex: (9_000, 14_750, 8_200, 3_100)}
    for index, start in enumerate(first):
        with time_machine.travel(start + timedelta(days=10), tick=False):
            for customer, counts in monthly_calls.items():
                usage_ingest(
                    project=project,
                    events=[{"customer": customer.external_id, "meter": "api_calls", "value": counts[index],
                             "idempotency_key": f"{customer.external_id}-{index}"}],
                )  # fmt: skip
        if index == 0:
            continue
        with time_machine.travel(start + timedelta(hours=1), tick=False):
            billing_close(as_of=start + timedelta(hours=1))
            if index < 3:  # the earlier months were approved on their first day
                for invoice in Invoice.objects.filter(project=project, status=InvoiceStatus.PENDING_REVIEW):
                    invoice_approve(invoice=invoice, actor=None)
    with time_machine.travel(first[2] + timedelta(days=3), tick=False):
        paid = Invoice.objects.filter(project=project, customer=globex, status=InvoiceStatus.OPEN).earliest(
            "id"
        )
        payment_record(
            invoice=paid, amount=paid.amount_due, reference="BANK-0815", method="bank_transfer", actor=None
        )
    contract = ContractFactory(project=project, title="Initech master services agreement", customer=initech,
                               customer_name="", customer_email="", start_date=first[3].date())  # fmt: skip
    ContractLine.objects.create(
        contract=contract, kind="usage", name="API calls", meter=calls, pricing_model="graduated",
        tiers=[{"up_to": "50000", "unit_price": "0.0012", "flat_fee": "0"},
               {"up_to": None, "unit_price": "0.0008", "flat_fee": "0"}],
    )  # fmt: skip
    billing_admin = MembershipFactory(project=project, role=Role.BILLING_ADMIN, user__username="fiona").user
    viewer = MembershipFactory(project=project, role=Role.VIEWER, user__username="victor").user
    return Month(project, initech, globex, contract, billing_admin, viewer)
