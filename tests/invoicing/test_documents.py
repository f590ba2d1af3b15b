"""Invoice and credit note PDFs: what they say (pdftotext), kept once issued, DRAFT before."""

import hashlib
import shutil
import subprocess
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile

from invoicing.documents import document_for, invoice_html, invoice_pdf, template_check
from invoicing.models import Document, Invoice, InvoiceStatus, LineType
from invoicing.services import credit_note_create
from tests.conftest import api_client, require
from tests.invoicing.documents import OCT, invoice_of, pdf_picture, pdf_text

pytestmark = pytest.mark.django_db

TIERS = [
    {"tier": 1, "units": "1000", "unit_price": "0", "flat_fee": "0", "amount": "0"},
    {"tier": 2, "units": "250.5", "unit_price": "0.02", "flat_fee": "0", "amount": "5.01"},
]


def usd_lines() -> list[dict]:
    return [
        {"type": LineType.BASE_FEE, "description": "Pro plan", "unit_price": Decimal(49), "amount": "49.00"},
        {"type": LineType.USAGE, "description": "API calls", "quantity": "1250.5", "amount": "5.01", "tiers": TIERS},
        {"type": LineType.LATE_USAGE, "description": "Storage (late)", "quantity": "3", "unit_price": Decimal("0.333"),
         "amount": "1.00", "period_start": OCT, "period_end": OCT.replace(month=11)},
        {"type": LineType.ADJUSTMENT, "description": "Onboarding", "amount": "120.00", "is_manual": True,
         "reason": "Agreed on the call of 3 Nov"},
        {"type": LineType.CREDIT, "description": "Goodwill credit", "amount": "-10.00", "is_manual": True,
         "reason": "Outage of 12 Nov"},
    ]  # fmt: skip


def test_an_issued_invoice_pdf_says_everything_the_customer_needs(project, tmp_path):
    project.company_name, project.company_tax_id = "Acme Cloud Inc.", "US12-3456789"
    project.company_address = "1 Market St\nSan Francisco, CA 94105"
    project.payment_instructions = "IBAN DE89 3704 0044 0532 0130 00"
    project.footer_text, project.payment_terms_days = "Thank you for your business.", 14
    project.save()
    invoice = invoice_of(
        project, usd_lines(), status=InvoiceStatus.OPEN, name="Globex GmbH", tax_id="DE811907980",
        billing_address={"line1": "Hauptstr. 5", "postal_code": "10115", "city": "Berlin", "country": "DE"},
    )  # fmt: skip

    response = api_client(project).get(f"/v1/invoices/{invoice.public_id}/pdf")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'inline; filename="ACME-000001.pdf"'
    text = pdf_text(response.content, tmp_path)
    for expected in [
        "ACME-000001", "Acme Cloud Inc.", "1 Market St", "San Francisco, CA 94105", "US12-3456789",
        "Globex GmbH", "Hauptstr. 5", "10115 Berlin", "Germany", "DE811907980",
        "Nov 1, 2026 – Nov 30, 2026",
        "Pro plan", "$49.00",
        "API calls", "1,250.5", "$5.01", "Tier 1", "1,000", "Tier 2", "250.5", "$0.02",
        "Storage (late)", "Usage of Oct 1, 2026 – Oct 31, 2026", "$0.333", "$1.00",
        "Onboarding", "$120.00", "Agreed on the call of 3 Nov",
        "Goodwill credit", "-$10.00", "Outage of 12 Nov",
        "Subtotal", "$175.01", "Credits", "Total", "$165.01", "Amount due",
        "IBAN DE89 3704 0044 0532 0130 00", "Thank you for your business.",
    ]:  # fmt: skip
        assert expected in text, expected
    assert "DRAFT" not in text
    assert f"Due {invoice.due_at:%b} {invoice.due_at.day}, {invoice.due_at.year}" in text
    # For a person to look at (docs/documents.md shows it): a picture of the page.
    picture = pdf_picture(response.content, "invoice-usd", tmp_path)
    assert picture.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("currency", "locale", "lines", "expected"),
    [
        ("JPY", "en_US", [("Compute", "1200"), ("Support", "35")], ["¥1,200", "¥35", "¥1,235"]),
        ("KWD", "en_US", [("Compute", "1.200"), ("Support", "0.035")], ["KWD1.200", "KWD0.035", "KWD1.235"]),
        (
            "EUR",
            "de_DE",
            [("Rechenzeit", "1234.50"), ("Support", "0.05")],
            ["1.234,50 €", "0,05 €", "1.234,55 €"],
        ),
    ],
)
def test_money_has_the_currency_s_decimals_in_the_reader_s_locale(
    project, tmp_path, currency, locale, lines, expected
):
    rows = [{"type": LineType.ADJUSTMENT, "description": name, "amount": amount} for name, amount in lines]
    invoice = invoice_of(project, rows, status=InvoiceStatus.OPEN, currency=currency, locale=locale)

    text = pdf_text(invoice_pdf(invoice), tmp_path)

    for name, _ in lines:
        assert name in text
    for amount in expected:
        assert amount in text, amount


def test_a_draft_is_marked_and_not_kept(project, tmp_path):
    invoice = invoice_of(project, usd_lines())

    response = api_client(project).get(f"/v1/invoices/{invoice.public_id}/pdf")

    assert response.status_code == 200
    assert response["Content-Disposition"] == f'inline; filename="draft-{invoice.public_id}.pdf"'
    assert "Draft — not yet issued" in pdf_text(response.content, tmp_path)
    assert '<div class="mark">DRAFT</div>' in invoice_html(invoice)  # across every page, rotated
    assert not Document.objects.exists()


def test_an_issued_invoice_is_rendered_once_and_kept_with_its_digest(project):
    invoice = invoice_of(project, usd_lines(), status=InvoiceStatus.OPEN)

    first = invoice_pdf(invoice)
    project.accent_color, project.footer_text = "#ff0000", "Changed later"
    project.save()
    invoice.refresh_from_db()
    again = invoice_pdf(invoice)

    assert again == first
    document = Document.objects.get()
    assert document.invoice == invoice
    assert document.sha256 == hashlib.sha256(first).hexdigest()
    assert document.size == len(first)
    assert document_for(invoice=invoice) == document


def test_another_project_s_invoice_is_not_found(project, other_project):
    invoice = invoice_of(project, usd_lines(), status=InvoiceStatus.OPEN)

    response = api_client(other_project).get(f"/v1/invoices/{invoice.public_id}/pdf")

    assert response.status_code == 404
    assert not Document.objects.exists()


def test_a_credit_note_has_its_own_pdf(project, tmp_path):
    invoice = invoice_of(project, usd_lines(), status=InvoiceStatus.OPEN)
    note = credit_note_create(invoice=invoice, actor=None, reason="billing_error", amount=Decimal("20.00"))

    response = api_client(project).get(f"/v1/credit-notes/{note.public_id}/pdf")

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'inline; filename="ACME-CN-000001.pdf"'
    text = pdf_text(response.content, tmp_path)
    for expected in ["Credit note", "ACME-CN-000001", "ACME-000001", "Billing error", "$20.00"]:
        assert expected in text, expected
    assert Document.objects.get().credit_note == note
    assert api_client(project).get(f"/v1/credit-notes/{note.public_id}").json()["pdf_url"] == (
        f"/v1/credit-notes/{note.public_id}/pdf"
    )


def test_a_project_template_is_used_for_its_invoices(project, tmp_path):
    project.invoice_template = (
        "<html><body><h1>Rechnung {{ document.number }}</h1>"
        "{% for line in lines %}<p>{{ line.description }}: {{ line.amount }}</p>{% endfor %}"
        "<p>Zu zahlen: {{ totals.amount_due }}</p></body></html>"
    )
    project.save()
    invoice = invoice_of(project, usd_lines(), status=InvoiceStatus.OPEN)

    text = pdf_text(invoice_pdf(invoice), tmp_path)

    assert "Rechnung ACME-000001" in text
    assert "Pro plan: $49.00" in text
    assert "Zu zahlen: $165.01" in text


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{% if %}", "does not compile"),
        ("{% include 'admin/base.html' %}", "TemplateDoesNotExist"),
        ('<img src="file:///etc/hostname">', "may load only data: URIs, not file:///etc/hostname"),
        ('<link rel="stylesheet" href="http://127.0.0.1:9/x.css">', "may load only data: URIs"),
    ],
)
def test_a_template_that_does_not_render_is_refused_before_it_is_saved(project, template, error):
    with pytest.raises(ValidationError) as refused:
        template_check(project, template)

    assert error in refused.value.messages[0]


def test_the_invoice_names_its_pdf(project):
    invoice = invoice_of(project, usd_lines(), status=InvoiceStatus.OPEN)

    body = api_client(project).get(f"/v1/invoices/{invoice.public_id}").json()

    assert body["pdf_url"] == f"/v1/invoices/{invoice.public_id}/pdf"
    assert body["last_delivery"]["status"] == "queued"
    assert body["last_delivery"]["reason"] == "issued"


def test_an_invoice_rejected_in_review_renders_void_and_is_not_kept(project, tmp_path):
    invoice = invoice_of(project, usd_lines())
    Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.VOID)
    invoice.refresh_from_db()

    text = pdf_text(invoice_pdf(invoice), tmp_path)

    assert "Rejected — never issued" in text
    assert '<div class="mark">VOID</div>' in invoice_html(invoice)
    assert not Document.objects.exists()


def test_the_logo_is_embedded_and_a_lost_logo_file_is_left_out(project, tmp_path):
    require(shutil.which("pdfimages") is not None, "pdfimages (poppler-utils)")
    project.logo.save("logo.png", ContentFile(PNG_2X2), save=True)
    invoice = invoice_of(project, usd_lines(), status=InvoiceStatus.OPEN)
    path = tmp_path / "invoice.pdf"
    path.write_bytes(invoice_pdf(invoice))

    listing = subprocess.run(["pdfimages", "-list", str(path)], check=True, capture_output=True, text=True)  # noqa: S603, S607

    assert len(listing.stdout.splitlines()) == 3  # two header lines, one image
    project.logo.storage.delete(project.logo.name)
    draft = invoice_of(project, usd_lines())
    assert "Draft — not yet issued" in pdf_text(invoice_pdf(draft), tmp_path)


# A 2 × 2 PNG.
PNG_2X2 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73"
    "0000001049444154789c63f8cfc000440c100a001fee03fd8b5f14d40000000049454e44ae426082"
)
