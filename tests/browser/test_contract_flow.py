import pytest

from accounts.models import Role
from catalog.models import Contract, ContractStatus
from subscriptions.models import Subscription
from tests.accounts.factories import PASSWORD, MembershipFactory, ProjectFactory
from tests.browser.conftest import admin_login
from tests.catalog.factories import MeterFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def test_ops_upload_a_contract_with_tiered_usage_and_accept_it(page, tmp_path):
    project = ProjectFactory(name="Acme")
    MeterFactory(project=project, code="ocr", name="Invoices processed")
    user = MembershipFactory(project=project, role=Role.BILLING_ADMIN).user
    document = tmp_path / "initech-msa.pdf"
    document.write_bytes(PDF)

    admin_login(page, user.username, PASSWORD)
    page.goto("/admin/catalog/contract/add/")
    page.select_option("#id_project", label="Acme")
    page.fill("#id_title", "Initech MSA")
    page.set_input_files("#id_document", str(document))
    page.fill("#id_customer_name", "Initech")
    page.fill("#id_customer_email", "ap@initech.example")
    page.fill("#id_currency", "USD")
    page.fill("#id_start_date", "2026-02-01")
    page.select_option("#id_lines-0-kind", "usage")
    page.fill("#id_lines-0-name", "OCR")
    page.select_option("#id_lines-0-meter", label="Invoices processed")
    page.select_option("#id_lines-0-pricing_model", "graduated")
    page.fill("#id_lines-0-tiers-0-up_to", "1000")
    page.fill("#id_lines-0-tiers-0-unit_price", "0.10")
    page.fill("#id_lines-0-tiers-0-flat_fee", "0")
    page.fill("#id_lines-0-tiers-1-unit_price", "0.05")  # no "up to": the open-ended last tier
    page.click("input[name=_save]")
    page.locator("#result_list").get_by_role("link", name="Initech MSA").wait_for()

    page.check("input[name=_selected_action]")
    page.select_option("select[name=action]", "accept")
    page.click("button[name=index]")

    assert "Initech MSA: accepted; customer, plan and subscription created." in page.inner_text(
        ".messagelist"
    )
    contract = Contract.objects.get()
    assert contract.status == ContractStatus.ACCEPTED
    assert Subscription.objects.get().customer.name == "Initech"
    assert contract.plan.charges.get().tiers == [
        {"up_to": "1000", "unit_price": "0.1", "flat_fee": "0"},
        {"up_to": None, "unit_price": "0.05", "flat_fee": "0"},
    ]
