"""Invoices with the lines a real one has, and the text of their PDFs (pdftotext)."""

import os
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from django.db import transaction

from invoicing.models import BillingReason, Invoice, InvoiceLine, InvoiceStatus
from invoicing.services import invoice_issue
from tests.catalog.factories import CustomerFactory, make_plan, subscribe
from tests.conftest import require

D = Decimal
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)


def pdf_text(data: bytes, tmp_path) -> str:
    require(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils)")
    path = tmp_path / "document.pdf"
    path.write_bytes(data)
    return subprocess.run(  # noqa: S603 - a fixed command on a file the test wrote
        ["pdftotext", "-layout", str(path), "-"],  # noqa: S607 - found on PATH, as require() checked
        check=True,
        capture_output=True,
        text=True,
    ).stdout


# Pictures the tests make (PDF pages as PNG), kept for a person to look at: var/artefacts/.
ARTEFACTS = Path(
    os.environ.get("BILLABLE_ARTEFACTS", Path(__file__).resolve().parents[2] / "var" / "artefacts")
)


def pdf_picture(data: bytes, name: str, tmp_path) -> Path:
    """The PDF's first page as a PNG in the artefacts directory (pdftoppm)."""
    require(shutil.which("pdftoppm") is not None, "pdftoppm (poppler-utils)")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    source = tmp_path / f"{name}.pdf"
    source.write_bytes(data)
    subprocess.run(  # noqa: S603 - a fixed command on files the test wrote
        ["pdftoppm", "-png", "-r", "80", "-singlefile", str(source), str(ARTEFACTS / name)],  # noqa: S607
        check=True,
    )
    return ARTEFACTS / f"{name}.png"


def invoice_of(project, lines: list[dict], *, status=InvoiceStatus.DRAFT, customer=None, **customer_fields):
    """An invoice for November 2026 with these lines ({type, description, amount, …}), issued
    unless `status` stays draft. Its total is the sum of the lines."""
    customer = customer or CustomerFactory(project=project, **customer_fields)
    subscription = subscribe(customer, make_plan(project, currency=customer.currency), backdate=True)
    with transaction.atomic():
        invoice = Invoice.objects.create(
            project=project, customer=customer, subscription=subscription, currency=customer.currency,
            billing_reason=BillingReason.SUBSCRIPTION_CYCLE, period_start=NOV, period_end=DEC,
            total=sum((D(line["amount"]) for line in lines), D(0)),
        )  # fmt: skip
        for position, line in enumerate(lines):
            InvoiceLine.objects.create(
                invoice=invoice, position=position, period_start=line.pop("period_start", NOV),
                period_end=line.pop("period_end", DEC), quantity=D(line.pop("quantity", "1")),
                **{**line, "amount": D(line["amount"])},
            )  # fmt: skip
        if status != InvoiceStatus.DRAFT:
            invoice_issue(invoice=invoice, actor=None)
    invoice.refresh_from_db()
    return invoice
