from django.db.models import Prefetch, QuerySet

from accounts.models import Project
from invoicing.models import CreditNote, CreditNoteLine, Invoice, InvoiceEmail, InvoiceLine


def invoice_lines_prefetch() -> Prefetch:
    """An invoice's lines with what the API shows of them (plan, charge, meter, original invoice)."""
    lines = InvoiceLine.objects.select_related("plan", "charge", "meter", "original_invoice")
    return Prefetch("lines", queryset=lines)


def invoice_list(*, project: Project) -> QuerySet[Invoice]:
    return (
        Invoice.objects.filter(project=project)
        .select_related("customer", "subscription", "project")
        .prefetch_related(invoice_lines_prefetch(), invoice_emails_prefetch(), "payments")
    )


def invoice_emails_prefetch() -> Prefetch:
    """An invoice's emails, latest first (the API shows the latest as `last_delivery`)."""
    return Prefetch("emails", queryset=InvoiceEmail.objects.select_related("invoice").order_by("-id"))


def credit_note_list(*, project: Project) -> QuerySet[CreditNote]:
    lines = CreditNoteLine.objects.select_related("invoice_line", "credit_note__invoice")
    return (
        CreditNote.objects.filter(project=project)
        .select_related("invoice")
        .prefetch_related(Prefetch("lines", queryset=lines))
    )
