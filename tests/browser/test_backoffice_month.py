"""A billing admin's month in the back office, in a real browser at 1440 × 900: the dashboard, the
review queue, approving, voiding with a reason, the customer's page and a contract, each page saved
as a screenshot (docs/admin.md shows them). A viewer sees the same pages and is refused every write.
"""

import re

import pytest

from accounts.models import AuditLogEntry
from invoicing.models import Invoice, InvoiceStatus
from tests.accounts.factories import PASSWORD
from tests.browser.backoffice import backoffice_month
from tests.browser.conftest import admin_login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# What a reader of invoices should never see: stored decimals (49.0000, 213.000000000000), exponents
# (0E-12), raw JSON.
RAW = re.compile(r"\.\d*000\b|\dE-\d|\{\}")


def readable(page, name: str) -> str:
    """The page's text, saved as a screenshot first; fails on a raw number or raw JSON."""
    screenshot(page, name)
    text = page.inner_text("#content")
    assert not RAW.findall(text), name
    return text


@pytest.fixture
def month():
    return backoffice_month()


def test_a_billing_admin_reviews_approves_voids_and_looks_up_a_customer(page, month):
    admin_login(page, month.billing_admin.username, PASSWORD)
    readable(page, "dashboard")

    page.get_by_role("link", name="Pending review", exact=True).first.click()
    rows = page.locator("#result_list tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    readable(page, "review-queue")
    rows.filter(has_text="Initech").locator("th a").click()
    readable(page, "invoice")
    page.get_by_role("button", name="Approve and issue").click()
    assert "Approved and issued." in page.inner_text(".messagelist")
    approved = Invoice.objects.filter(customer=month.initech, number__isnull=False).latest("issued_at")

    page.goto("/admin/invoicing/invoice/")
    readable(page, "invoice-list")
    numbers = page.locator("#result_list tbody th").all_inner_texts()
    issued = Invoice.objects.filter(project=month.project, number__isnull=False).order_by("-number")
    assert [n for n in numbers if n.startswith("ACME")] == [invoice.number for invoice in issued]

    page.locator("#result_list").get_by_role("link", name=approved.number).click()
    page.get_by_role("link", name="Void…").click()
    page.fill("#id_reason", "Issued to the wrong entity; reissued under the new contract")
    page.click("input[type=submit]")
    assert "Voided." in page.inner_text(".messagelist")
    approved.refresh_from_db()
    assert (approved.status, approved.void_reason) == (
        InvoiceStatus.VOID,
        "Issued to the wrong entity; reissued under the new contract",
    )

    page.goto(f"/admin/catalog/customer/{month.initech.pk}/change/")
    text = readable(page, "customer")
    for section in ("Subscriptions", "Invoices", "Usage this period"):
        assert section in text
    assert approved.number in text

    page.goto(f"/admin/catalog/contract/{month.contract.pk}/change/")
    readable(page, "contract")


def test_a_viewer_sees_the_month_and_is_refused_every_write(page, month):
    held = Invoice.objects.filter(project=month.project, status=InvoiceStatus.PENDING_REVIEW).first()
    issued = Invoice.objects.filter(project=month.project, status=InvoiceStatus.OPEN).first()
    audited = AuditLogEntry.objects.count()
    admin_login(page, month.viewer.username, PASSWORD)

    page.goto(f"/admin/invoicing/invoice/{held.pk}/change/")
    assert page.get_by_role("button", name="Approve and issue").count() == 0
    assert page.get_by_role("link", name="Reject…").count() == 0
    screenshot(page, "viewer-invoice")
    page.goto(f"/admin/invoicing/invoice/{issued.pk}/change/")
    assert page.get_by_role("link", name="Void…").count() == 0

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf}
    for url, form in (
        (f"/admin/invoicing/invoice/{held.pk}/approve/", {}),
        (f"/admin/invoicing/invoice/{held.pk}/reject/", {"reason": "no"}),
        (f"/admin/invoicing/invoice/{issued.pk}/void/", {"reason": "no"}),
        (f"/admin/invoicing/invoice/{issued.pk}/resend/", {}),
        (f"/admin/catalog/customer/{month.initech.pk}/change/", {"name": "Renamed"}),
    ):
        response = page.request.post(url, form=form, headers=headers)
        assert response.status == 403, url

    page.goto("/admin/invoicing/pendingreviewinvoice/")
    assert page.locator("select[name=action] option[value=approve_selected]").count() == 0

    held.refresh_from_db()
    issued.refresh_from_db()
    month.initech.refresh_from_db()
    assert (held.status, issued.status, month.initech.name) == (
        InvoiceStatus.PENDING_REVIEW,
        InvoiceStatus.OPEN,
        "Initech",
    )
    assert AuditLogEntry.objects.count() == audited
