"""Invoice and credit note PDFs: an HTML template (templates/invoicing/, or the project's own)
rendered by WeasyPrint (docs/documents.md).

An issued invoice's PDF is rendered once, after the transaction that issued it commits, and kept
through Django's storage API with its SHA-256 (invoicing.models.Document): it is the financial
record and is never rendered again. Drafts and invoices in review are rendered on demand, marked
DRAFT on every page, and not kept. A credit note's PDF is rendered and kept the same way the first
time it is asked for.

Templates load nothing from outside the document: the only URLs WeasyPrint may fetch are `data:`
URIs (the logo is embedded as one), so a template cannot read local files or reach the network.
"""

import base64
import hashlib
import logging
import mimetypes
import threading
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from babel import Locale
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template import Context, Engine, TemplateSyntaxError
from django.template.loader import render_to_string
from django.utils import timezone
from weasyprint import HTML
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError, URLFetcher

from accounts.models import Project
from billing_site import formats
from catalog.models import Customer
from invoicing.models import (
    EDITABLE_STATUSES,
    WATERFALL_TYPES,
    CreditNote,
    Document,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineType,
)

logger = logging.getLogger(__name__)
INVOICE_TEMPLATE = "invoicing/invoice.html"
CREDIT_NOTE_TEMPLATE = "invoicing/credit_note.html"
# Line types that reduce the total; the rest add up to the subtotal.
CREDIT_TYPES = frozenset({LineType.CREDIT})
# The engine project templates are compiled with: the Django language, no file loaders, so an
# override cannot {% include %} or {% extends %} files of the server.
_OVERRIDE_ENGINE = Engine(debug=False, loaders=[], libraries={}, autoescape=True)


_local = threading.local()


def _font_config() -> FontConfiguration:
    """One font configuration per thread, reused: building it is ~15 % of a rendering
    (docs/performance.md), and WeasyPrint does not say it may be shared between threads."""
    if not hasattr(_local, "font_config"):
        _local.font_config = FontConfiguration()
    return _local.font_config


class _DataOnly(URLFetcher):
    """Fetches `data:` URIs and stops the rendering at any other URL (a file, the network)."""

    def fetch(self, url, headers=None):
        if not url.startswith("data:"):
            raise FatalURLFetchingError(f"Templates may load only data: URIs, not {url[:200]}")
        return super().fetch(url, headers)


def pdf_from_html(html: str) -> bytes:
    return HTML(string=html, url_fetcher=_DataOnly()).write_pdf(font_config=_font_config())


def pdf_name(number: str | None, public_id: str) -> str:
    """The file name a download gets: the document's number, or draft-<id> before it has one."""
    return f"{number}.pdf" if number else f"draft-{public_id}.pdf"


# --- what a template sees ----------------------------------------------------------------------


@dataclass(frozen=True)
class Formatter:
    """Formats for one document: its currency, the reader's locale and time zone."""

    currency: str
    locale: str
    timezone: str

    def money(self, amount: Decimal) -> str:
        return formats.money(amount, self.currency, self.locale)

    def day(self, moment) -> str:
        return formats.day(moment, self.timezone, self.locale) if moment else ""

    def period(self, start, end) -> str:
        return formats.period(start, end, self.timezone, self.locale)


def _lines_of(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _address_lines(address: dict, locale: str) -> list[str]:
    """Street lines, postal code and city, state, and the country by name in the reader's
    language (DE: Germany, Deutschland)."""
    city = " ".join(part for part in (address.get("postal_code"), address.get("city")) if part)
    country = address.get("country") or ""
    country = Locale.parse(locale).territories.get(country, country)
    parts = [address.get("line1"), address.get("line2"), city, address.get("state"), country]
    return [part for part in parts if part]


def _logo_data_uri(project: Project) -> str:
    """The logo embedded in the document; a logo whose file is gone is left out (logged), rather
    than every invoice failing to render."""
    if not project.logo:
        return ""
    try:
        with project.logo.open("rb") as file:
            data = file.read()
    except OSError:
        logger.warning("The logo of project %s (%s) cannot be read", project.public_id, project.logo.name)
        return ""
    kind = mimetypes.guess_type(project.logo.name)[0] or "image/png"
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def _company(project: Project) -> dict:
    return {
        "name": project.company_name or project.name,
        "address_lines": _lines_of(project.company_address),
        "tax_id": project.company_tax_id,
        "logo": _logo_data_uri(project),
        "accent_color": project.accent_color,
        "footer": project.footer_text,
        "email": project.reply_to_email or project.sender_email,
    }


def _customer(customer, fmt: "Formatter") -> dict:
    return {
        "name": customer.name or customer.email or customer.external_id,
        "email": customer.email,
        "address_lines": _address_lines(customer.billing_address or {}, fmt.locale),
        "tax_id": customer.tax_id,
        "external_id": customer.external_id,
    }


def formatter_for(*, project: Project, customer, currency: str) -> Formatter:
    return Formatter(
        currency=currency,
        locale=customer.locale or project.locale,
        timezone=customer.timezone or project.timezone,
    )


def _line(line: InvoiceLine, fmt: Formatter) -> dict:
    tiers = [
        {
            "tier": tier["tier"],
            "units": formats.quantity(Decimal(tier["units"]), fmt.locale),
            "unit_price": formats.unit_price(Decimal(tier["unit_price"]), fmt.currency, fmt.locale),
            "flat_fee": fmt.money(Decimal(tier["flat_fee"])) if Decimal(tier["flat_fee"]) else "",
            "amount": fmt.money(Decimal(tier["amount"])),
        }
        for tier in line.tiers or []
    ]
    note = ""
    if line.type == LineType.LATE_USAGE:
        note = f"Usage of {fmt.period(line.period_start, line.period_end)}"
        if line.original_invoice_id and line.original_invoice.number:
            note += f", reported after invoice {line.original_invoice.number}"
    return {
        "type": line.type,
        "description": line.description,
        "period": fmt.period(line.period_start, line.period_end),
        "quantity": formats.quantity(line.quantity, fmt.locale),
        "unit_price": ""
        if line.unit_price is None
        else formats.unit_price(line.unit_price, fmt.currency, fmt.locale),
        "amount": fmt.money(line.amount),
        "tiers": tiers if len(tiers) > 1 else [],
        "note": note,
        "reason": line.reason if line.is_manual else "",
    }


def invoice_context(
    invoice: Invoice, *, draft: bool | None = None, lines: list[InvoiceLine] | None = None
) -> dict:
    """Everything the invoice template shows (docs/documents.md lists it). `draft` marks every
    page DRAFT (default: while the invoice may still change)."""
    project, customer = invoice.project, invoice.customer
    fmt = formatter_for(project=project, customer=customer, currency=invoice.currency)
    if lines is None:
        lines = list(invoice.lines.select_related("original_invoice"))
    steps = [line for line in lines if line.type in WATERFALL_TYPES]
    lines = [line for line in lines if line.type not in WATERFALL_TYPES]
    credits = sum((line.amount for line in lines if line.type in CREDIT_TYPES), Decimal(0))
    draft = invoice.status in EDITABLE_STATUSES if draft is None else draft
    terms = ""
    if invoice.due_at and invoice.status == InvoiceStatus.OPEN:
        terms = f"Due {fmt.day(invoice.due_at)}"
    elif invoice.status == InvoiceStatus.PAID:
        terms = "Paid"
    return {
        "document": {
            "kind": "invoice",
            "title": "Invoice",
            "number": invoice.number or "",
            "status": invoice.status,
            "status_label": invoice.get_status_display(),
            "draft": draft,
            "void": invoice.status == InvoiceStatus.VOID,
            "issued_on": fmt.day(invoice.issued_at),
            "due_on": fmt.day(invoice.due_at),
            "period": fmt.period(invoice.period_start, invoice.period_end),
            "currency": invoice.currency,
        },
        "company": _company(project),
        "customer": _customer(customer, fmt),
        "lines": [_line(line, fmt) for line in lines],
        "totals": {
            "subtotal": fmt.money(invoice.subtotal - credits),
            "credits": fmt.money(credits) if credits else "",
            # The waterfall (invoicing/waterfall.py): discounts, taxes (an inclusive one is shown
            # as included, not added), then the total and the prepaid credits it took.
            "discounts": _steps(steps, LineType.DISCOUNT, fmt),
            "taxes": _steps(steps, LineType.TAX, fmt),
            "prepaid_credits": _steps(steps, LineType.PREPAID_CREDIT, fmt),
            "tax_note": invoice.tax_note,
            "total": fmt.money(invoice.total),
            "amount_credited": fmt.money(invoice.amount_credited) if invoice.amount_credited else "",
            "amount_paid": fmt.money(invoice.amount_paid) if invoice.amount_paid else "",
            "amount_due": fmt.money(invoice.amount_due),
        },
        "payment": {"terms": terms, "instructions": _lines_of(project.payment_instructions)},
    }


def _steps(lines: list[InvoiceLine], kind: str, fmt) -> list[tuple[str, str]]:
    return [(line.description, fmt.money(line.amount)) for line in lines if line.type == kind]


def credit_note_context(note: CreditNote) -> dict:
    invoice = note.invoice
    project, customer = invoice.project, invoice.customer
    fmt = formatter_for(project=project, customer=customer, currency=invoice.currency)
    return {
        "document": {
            "kind": "credit_note",
            "title": "Credit note",
            "number": note.number,
            "draft": False,
            "issued_on": fmt.day(note.created_at),
            "invoice_number": invoice.number,
            "invoice_issued_on": fmt.day(invoice.issued_at),
            "reason": note.get_reason_display(),
            "memo": note.memo,
            "currency": invoice.currency,
        },
        "company": _company(project),
        "customer": _customer(customer, fmt),
        "lines": [
            {"description": line.description, "amount": fmt.money(line.amount)} for line in note.lines.all()
        ],
        "totals": {
            "total": fmt.money(note.amount),
            "amount_credited": fmt.money(note.amount_credited),
            "credits_returned": fmt.money(note.credits_returned) if note.credits_returned else "",
            "refund_owed": fmt.money(note.refund_owed) if note.refund_owed else "",
        },
    }


# --- rendering ---------------------------------------------------------------------------------


def _html(context: dict, *, template: str, override: str = "") -> str:
    if override:
        return _OVERRIDE_ENGINE.from_string(override).render(Context(context))
    return render_to_string(template, context)


def invoice_html(invoice: Invoice, *, draft: bool | None = None) -> str:
    return _html(
        invoice_context(invoice, draft=draft),
        template=INVOICE_TEMPLATE,
        override=invoice.project.invoice_template,
    )


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a PDF: the kept document once issued; a DRAFT-marked rendering before (and
    a VOID-marked one of an invoice rejected in review, which was never issued)."""
    if invoice.status in EDITABLE_STATUSES or invoice.number is None:
        return pdf_from_html(invoice_html(invoice))
    with document_for(invoice=invoice).file.open("rb") as file:
        return file.read()


def credit_note_pdf(note: CreditNote) -> bytes:
    with document_for(credit_note=note).file.open("rb") as file:
        return file.read()


def document_for(*, invoice: Invoice | None = None, credit_note: CreditNote | None = None) -> Document:
    """The kept PDF of an issued invoice or a credit note, rendered and stored the first time.

    Idempotent: the document is one row per record (a unique constraint), so two renderings
    racing keep one and the other's file is removed; a crash after storing the file and before
    the row commits leaves a file nothing names, and the rerun renders and keeps a new one.
    """
    if invoice is not None and invoice.number is None:
        raise ValueError("An invoice that was never issued has no kept document.")
    found = Document.objects.filter(Q(invoice=invoice) if invoice else Q(credit_note=credit_note)).first()
    if found is not None:
        return found
    if invoice is not None:
        record, project, html = invoice, invoice.project, invoice_html(invoice, draft=False)
    else:
        record, project = credit_note, credit_note.project
        html = _html(credit_note_context(credit_note), template=CREDIT_NOTE_TEMPLATE)
    data = pdf_from_html(html)
    document = Document(
        project=project,
        invoice=invoice,
        credit_note=credit_note,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    document.file.save(f"{project.public_id}-{record.number}.pdf", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            document.save()
    except IntegrityError:
        document.file.delete(save=False)
        return Document.objects.get(Q(invoice=invoice) if invoice else Q(credit_note=credit_note))
    return document


# --- project templates and previews --------------------------------------------------------------


def sample_invoice(project: Project) -> tuple[Invoice, list[InvoiceLine]]:
    """An unsaved invoice of a made-up customer with the lines an invoice typically has (a fee,
    tiered usage), for previews and for checking a template before it is saved."""
    now = timezone.now().replace(microsecond=0)
    start = now - timedelta(days=30)
    customer = Customer(
        name="Example Customer Ltd",
        email="billing@example.com",
        external_id="example",
        billing_address={
            "line1": "1 Sample Street",
            "postal_code": "10115",
            "city": "Berlin",
            "country": "DE",
        },
        tax_id="DE123456789",
        timezone=project.timezone,
    )
    invoice = Invoice(
        project=project,
        customer=customer,
        status=InvoiceStatus.OPEN,
        currency=project.currency,
        number=f"{project.invoice_number_prefix}-000123",
        period_start=start,
        period_end=now,
        issued_at=now,
        due_at=now + timedelta(days=project.payment_terms_days),
        total=Decimal(149),
    )
    tiers = [
        {"tier": 1, "units": "20000", "unit_price": "0", "flat_fee": "0", "amount": "0"},
        {"tier": 2, "units": "100000", "unit_price": "0.001", "flat_fee": "0", "amount": "100"},
    ]
    lines = [
        InvoiceLine(
            type=LineType.BASE_FEE,
            description="Pro plan",
            quantity=Decimal(1),
            unit_price=Decimal(49),
            amount=Decimal(49),
        ),
        InvoiceLine(
            type=LineType.USAGE,
            description="API requests",
            quantity=Decimal(120000),
            amount=Decimal(100),
            tiers=tiers,
        ),
    ]
    for line in lines:
        line.period_start, line.period_end = start, now
    return invoice, lines


def sample_html(project: Project, *, template: str | None = None) -> str:
    """The sample invoice with the project's branding, through `template` if given, else the
    project's own template or the default."""
    invoice, lines = sample_invoice(project)
    override = project.invoice_template if template is None else template
    return _html(invoice_context(invoice, lines=lines), template=INVOICE_TEMPLATE, override=override)


def template_check(project: Project, template: str) -> None:
    """Refuse a template that does not render: the sample invoice goes through it and WeasyPrint
    before it is saved, so a broken template fails here with the renderer's error, never when an
    invoice is issued."""
    if not template.strip():
        return
    try:
        pdf_from_html(sample_html(project, template=template))
    except TemplateSyntaxError as exc:
        raise ValidationError(f"The template does not compile: {exc}", code="invalid_template") from exc
    except (Exception, FatalURLFetchingError) as exc:  # the renderer's failure is the template's
        raise ValidationError(
            f"The template does not render: {type(exc).__name__}: {exc}", code="invalid_template"
        ) from exc
