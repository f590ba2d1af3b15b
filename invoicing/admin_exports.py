"""Invoices and their lines as CSV, for a spreadsheet: plain decimals rounded to the currency
(49.00, JPY 1235), no currency symbols, dates in ISO 8601 (UTC), statuses and reasons as the API
writes them. Streamed row by row, so a list of 100,000 invoices is never held in memory.

Text a customer typed (names, external IDs, line descriptions) may start with = + - @, which a
spreadsheet would run as a formula: such a cell is written with a leading apostrophe. Amounts are
written as numbers, so a credit stays -4.90.
"""

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from billing_site.money import decimal_string, round_money
from invoicing.models import Invoice, InvoiceLine
from invoicing.selectors import BACK_OFFICE_ORDER, invoice_lines_of

CHUNK = 2000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

INVOICE_COLUMNS = [
    "number", "public_id", "status", "billing_reason", "customer_name", "customer_external_id",
    "currency", "period_start", "period_end", "issued_at", "due_at", "subtotal", "discount", "tax",
    "total", "credits_applied", "amount_paid", "amount_due",
]  # fmt: skip
LINE_COLUMNS = [
    "invoice_number", "invoice_public_id", "line_type", "description", "period_start", "period_end",
    "quantity", "unit_price", "amount", "discount_amount", "tax_amount",
]  # fmt: skip


def text(value: str | None) -> str:
    """Typed text as a cell no spreadsheet runs as a formula."""
    value = value or ""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat() if moment else ""


def invoice_row(invoice: Invoice) -> list[Any]:
    def amount(value):
        return round_money(value, invoice.currency)

    return [
        invoice.number or "",
        invoice.public_id,
        invoice.status,
        invoice.billing_reason,
        text(invoice.customer.name),
        text(invoice.customer.external_id),
        invoice.currency,
        _when(invoice.period_start),
        _when(invoice.period_end),
        _when(invoice.issued_at),
        _when(invoice.due_at),
        amount(invoice.subtotal),
        amount(invoice.discount),
        amount(invoice.tax),
        amount(invoice.total),
        amount(invoice.credits_applied),
        amount(invoice.amount_paid),
        amount(invoice.amount_due),
    ]


def line_row(line: InvoiceLine) -> list[Any]:
    currency = line.invoice.currency
    return [
        line.invoice.number or "",
        line.invoice.public_id,
        line.type,
        text(line.description),
        _when(line.period_start),
        _when(line.period_end),
        decimal_string(line.quantity),
        decimal_string(line.unit_price) or "",
        round_money(line.amount, currency),
        round_money(line.discount_amount, currency),
        round_money(line.tax_amount, currency),
    ]


class _Echo:
    """csv.writer writes each row here and gets it back, to stream it."""

    def write(self, value: str) -> str:
        return value


def _stream(header: list[str], rows: Iterable[list[Any]], filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def invoices_csv(invoices: QuerySet[Invoice]) -> StreamingHttpResponse:
    """`invoices` as the list shows them: read without the list's per-row comparisons."""
    plain = Invoice.objects.filter(pk__in=invoices.values("pk")).select_related("customer")
    ordered = plain.order_by(*BACK_OFFICE_ORDER)
    rows = (invoice_row(invoice) for invoice in ordered.iterator(chunk_size=CHUNK))
    return _stream(INVOICE_COLUMNS, rows, "invoices.csv")


def invoice_lines_csv(invoices: QuerySet[Invoice]) -> StreamingHttpResponse:
    rows = (line_row(line) for line in invoice_lines_of(invoices).iterator(chunk_size=CHUNK))
    return _stream(LINE_COLUMNS, rows, "invoice-lines.csv")
