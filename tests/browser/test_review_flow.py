from datetime import UTC, datetime

import pytest
import time_machine

from accounts.models import Role
from invoicing.billing import billing_close
from invoicing.models import Invoice, InvoiceStatus
from tests.accounts.factories import PASSWORD, MembershipFactory, ProjectFactory
from tests.browser.conftest import admin_login
from tests.catalog.factories import CustomerFactory, make_plan, subscribe

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_finance_reviews_adjusts_and_approves_an_invoice(page):
    project = ProjectFactory(name="Acme", invoice_number_prefix="ACME", invoice_delivery="review")
    with time_machine.travel(datetime(2026, 2, 1, 1, tzinfo=UTC), tick=False):
        subscribe(CustomerFactory(project=project, name="Initech"), make_plan(project, name="Pro", base_fee="49"),
                  starts_at=datetime(2026, 2, 1, tzinfo=UTC))  # fmt: skip
        billing_close(as_of=datetime(2026, 2, 1, 1, tzinfo=UTC))
    user = MembershipFactory(project=project, role=Role.BILLING_ADMIN).user

    admin_login(page, user.username, PASSWORD)
    page.get_by_role("link", name="Pending review", exact=True).click()
    page.locator("#result_list tbody th a").first.click()
    page.get_by_role("link", name="Add adjustment…").click()
    page.fill("#id_description", "Onboarding workshop")
    page.fill("#id_amount", "150.00")
    page.fill("#id_reason", "Agreed with the customer on 20 January")
    page.click("input[type=submit]")
    page.get_by_role("button", name="Approve and issue").click()

    assert "Approved and issued." in page.inner_text(".messagelist")
    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.number, str(invoice.total)) == (
        InvoiceStatus.OPEN,
        "ACME-000001",
        "199.0000",
    )
