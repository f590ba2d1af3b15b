"""Money sums are exact on every database (SQLite adds in binary floating point)."""

from decimal import Decimal

import pytest

from billing_site.aggregates import MoneySum
from invoicing.composition import invoice_compose
from invoicing.models import InvoiceLine, LineType
from tests.invoicing.documents import invoice_of

pytestmark = pytest.mark.django_db

# Added as binary floats, in this order, these come to 0.119999999999997 at the 15 digits Django
# reads an SQLite aggregate with: a plain Sum would make the invoice's total that.
AMOUNTS = ["-73.13", "69.49", "52.75", "-48.99"]


def test_an_invoice_total_is_the_exact_sum_of_its_lines(project):
    lines = [
        {"type": LineType.ADJUSTMENT, "description": f"line {n}", "amount": a} for n, a in enumerate(AMOUNTS)
    ]
    invoice = invoice_of(project, lines)

    invoice_compose(invoice=invoice)

    assert invoice.total == Decimal("0.12")
    assert (
        str(InvoiceLine.objects.filter(invoice=invoice).aggregate(total=MoneySum("amount"))["total"])
        == "0.1200"
    )
    assert InvoiceLine.objects.filter(pk=-1).aggregate(total=MoneySum("amount"))["total"] is None
