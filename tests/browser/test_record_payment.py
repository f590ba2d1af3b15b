from decimal import Decimal

import pytest

from accounts.models import Role
from invoicing.models import InvoiceStatus
from payments.models import Payment
from tests.accounts.factories import PASSWORD, MembershipFactory, ProjectFactory
from tests.browser.conftest import admin_login
from tests.invoicing.factories import issued_invoice

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_finance_records_a_bank_transfer_against_an_open_invoice(page, tmp_path):
    project = ProjectFactory(name="Acme", invoice_number_prefix="ACME")
    invoice = issued_invoice(project, total="250.00")
    user = MembershipFactory(project=project, role=Role.BILLING_ADMIN).user

    admin_login(page, user.username, PASSWORD)
    page.get_by_role("link", name="Invoices", exact=True).click()
    page.locator("#result_list").get_by_role("link", name="ACME-000001").click()
    page.get_by_role("link", name="Record payment…").click()
    assert page.input_value("#id_amount") == "250.00"  # the amount due
    page.fill("#id_reference", "BANK-2026-1107")
    page.select_option("#id_method", label="Bank transfer")
    page.click("input[type=submit]")

    assert "Payment recorded." in page.inner_text(".messagelist")
    assert page.locator(".field-status .readonly").inner_text() == "Paid"
    row = page.locator("#payments-group tbody tr").first
    assert "BANK-2026-1107" in row.inner_text()
    assert "$250.00" in row.inner_text()
    page.screenshot(path=tmp_path / "record-payment.png", full_page=True)  # for a look when it fails
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.PAID, Decimal("250.00"))
    assert Payment.objects.get().processor_reference == "BANK-2026-1107"
