"""The invoice pages of the back office: how money and periods read, the order, the comparison with
the previous like invoice, the filters, bulk void and send, and the CSV exports."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts.models import AuditLogEntry, Role
from invoicing.models import (
    BillingReason,
    EmailReason,
    Invoice,
    InvoiceEmail,
    InvoiceLine,
    InvoiceStatus,
    LineType,
)
from tests.accounts.factories import MembershipFactory, ProjectFactory
from tests.catalog.factories import CustomerFactory, make_plan, subscribe
from tests.invoicing.factories import draft_invoice, issued_invoice
from webhooks.models import Event

pytestmark = pytest.mark.django_db

D = Decimal
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_10 = datetime(2026, 12, 10, 9, tzinfo=UTC)
THIN = "\u2009"  # babel's interval formats put thin spaces around the en dash
NOVEMBER = f"Nov 1{THIN}–{THIN}30, 2026"
LIST = "admin:invoicing_invoice_changelist"


def _login(client, project, role):
    user = MembershipFactory(project=project, role=role).user
    client.force_login(user)
    return user


def _cells(response, column: str) -> list[str]:
    cells = re.findall(rf'<td class="field-{column}[^"]*">(.*?)</td>', response.content.decode(), re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def _labels(response) -> list[str]:
    cells = re.findall(r'<th class="field-label">(.*?)</th>', response.content.decode(), re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def _field(response, name: str) -> str:
    found = re.search(rf'field-{name}\b.*?<div class="readonly">(.*?)</div>', response.content.decode(), re.S)
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def _invoice(customer, *, subscription=None, start, end, total="100.00", **fields) -> Invoice:
    """An invoice written as it is stored, for the list (no service involved); of a subscription of
    its own unless given one or a purchase of credits."""
    fields.setdefault("billing_reason", BillingReason.SUBSCRIPTION_CYCLE)
    fields.setdefault("status", InvoiceStatus.DRAFT)
    if subscription is None and fields["billing_reason"] != BillingReason.CREDIT_PURCHASE:
        subscription = subscribe(customer, make_plan(customer.project, base_fee=total))
    return Invoice.objects.create(
        project=customer.project, customer=customer, subscription=subscription, currency=customer.currency,
        period_start=start, period_end=end, total=D(total), subtotal=D(total), **fields,
    )  # fmt: skip


@pytest.fixture
def subscription(project):
    with time_machine.travel(NOV_1, tick=False):
        customer = CustomerFactory(project=project, name="Initech")
        return subscribe(
            customer, make_plan(project, base_fee="100"), starts_at=datetime(2026, 8, 1, tzinfo=UTC)
        )


# --- money -----------------------------------------------------------------------------------------


@time_machine.travel(NOV_1, tick=False)
def test_money_reads_with_its_currency_on_the_list_and_the_page(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project, total="250.00")

    listing = client.get(reverse(LIST))
    page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))

    assert _cells(listing, "total_label") == ["$250.00"]
    assert (
        _field(page, "total_label"),
        _field(page, "amount_paid_label"),
        _field(page, "amount_due_label"),
    ) == (
        "$250.00",
        "$0.00",
        "$250.00",
    )
    assert _cells(page, "line_quantity") == ["1"]
    assert (_cells(page, "line_unit_price"), _cells(page, "line_amount")) == (["-"], ["$250.00"])
    assert "250.0000" not in page.content.decode()


@time_machine.travel(NOV_1, tick=False)
def test_yen_have_no_decimals():
    project = ProjectFactory(name="Kaisha", currency="JPY", invoice_number_prefix="KA")
    client = Client()
    client.force_login(MembershipFactory(project=project, role=Role.OWNER).user)
    invoice = issued_invoice(project, total="1235")

    listing = client.get(reverse(LIST))
    form = client.get(reverse("admin:invoicing_invoice_credit", args=[invoice.pk]))

    assert _cells(listing, "total_label") == ["¥1,235"]
    assert "Leave empty to credit the whole invoice (¥1,235)." in form.content.decode()
    assert f"KA-000001 · {invoice.customer.name} · {NOVEMBER} · total ¥1,235 · due ¥1,235" in (
        form.content.decode()
    )


@time_machine.travel(NOV_1, tick=False)
def test_the_tier_breakdown_shows_units_and_prices_not_raw_decimals(client, project):
    _login(client, project, Role.VIEWER)
    invoice = draft_invoice(project)
    InvoiceLine.objects.create(
        invoice=invoice, type=LineType.USAGE, description="API calls", quantity=D("1049"), amount=D("0.49"),
        period_start=NOV_1, period_end=NOV_1 + timedelta(days=30), position=1,
        tiers=[
            {"tier": 1, "units": "1000.000000000000", "unit_price": "0E-12", "flat_fee": "0E-12", "amount": "0E-12"},
            {"tier": 2, "units": "49.000000000000", "unit_price": "0.010000000000", "flat_fee": "0",
             "amount": "0.490000000000"},
        ],
    )  # fmt: skip

    page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))

    assert re.findall(r"<li>(tier .*?)</li>", page.content.decode()) == [
        "tier 1: 1,000 × $0.00 + $0.00 = $0.00",
        "tier 2: 49 × $0.01 + $0.00 = $0.49",
    ]
    assert _cells(page, "line_quantity") == ["1", "1,049"]
    assert "0E-12" not in page.content.decode()
    assert "49.000000000000" not in page.content.decode()


def test_credit_notes_and_wallets_read_in_their_currency(client, project):
    from invoicing.credits import credits_grant
    from invoicing.services import credit_note_create

    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project, total="100.00")
    note = credit_note_create(invoice=invoice, actor=None, reason="billing_error", memo="", amount=D("30"))
    grant = credits_grant(customer=invoice.customer, currency="USD", amount=D("50"), actor=None)

    notes = client.get(reverse("admin:invoicing_creditnote_changelist"))
    note_page = client.get(reverse("admin:invoicing_creditnote_change", args=[note.pk]))
    grants = client.get(reverse("admin:invoicing_creditgrant_changelist"))
    grant_page = client.get(reverse("admin:invoicing_creditgrant_change", args=[grant.pk]))

    assert (_cells(notes, "amount_label"), _cells(notes, "refund_owed_label")) == (["$30.00"], ["$0.00"])
    assert (_field(note_page, "amount_credited_label"), _field(note_page, "refund_owed_label")) == (
        "$30.00",
        "$0.00",
    )
    assert _cells(grants, "amount_label") == ["$50.00"]
    assert (_field(grant_page, "amount_label"), _cells(grant_page, "amount_label")) == ("$50.00", ["$50.00"])


# --- order, periods, labels ------------------------------------------------------------------------


def test_issued_invoices_by_number_newest_first_then_drafts_by_period(client, project):
    _login(client, project, Role.VIEWER)
    customer = CustomerFactory(project=project, name="Initech")
    oct_1, sep_1 = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)
    _invoice(customer, start=sep_1, end=oct_1, status=InvoiceStatus.OPEN, number="ACME-000002")
    _invoice(customer, start=oct_1, end=NOV_1, status=InvoiceStatus.DRAFT)
    _invoice(customer, start=sep_1, end=oct_1, status=InvoiceStatus.PAID, number="ACME-000001")
    _invoice(
        customer, start=NOV_1, end=datetime(2026, 12, 1, tzinfo=UTC), status=InvoiceStatus.PENDING_REVIEW
    )
    _invoice(customer, start=sep_1, end=oct_1, status=InvoiceStatus.OPEN, number="ACME-000003")

    labels = _labels(client.get(reverse(LIST)))

    assert labels == [
        "ACME-000003",
        "ACME-000002",
        "ACME-000001",
        f"Pending review · Initech · {NOVEMBER}",
        f"Draft · Initech · Oct 1{THIN}–{THIN}31, 2026",
    ]


@time_machine.travel(NOV_1, tick=False)
def test_an_opening_invoice_shows_the_period_its_lines_bill_not_a_zero_length_one(client, project):
    _login(client, project, Role.VIEWER)
    opening = draft_invoice(project, customer=CustomerFactory(project=project, name="Initech"))
    # period_start == period_end, while its fee in advance covers November
    assert opening.period_start == opening.period_end

    listing = client.get(reverse(LIST))
    page = client.get(reverse("admin:invoicing_invoice_change", args=[opening.pk]))

    assert _cells(listing, "period_label") == [NOVEMBER]
    assert '<span style="white-space:nowrap">' in listing.content.decode()
    assert _labels(listing) == [f"Draft · Initech · {NOVEMBER}"]
    assert _field(page, "period_label") == NOVEMBER


def test_the_period_is_the_customers_days(client, project):
    _login(client, project, Role.VIEWER)
    customer = CustomerFactory(project=project, name="Initech", timezone="America/New_York")
    start, end = datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC)  # local midnights
    _invoice(customer, start=start, end=end, status=InvoiceStatus.OPEN, number="ACME-000001",
             issued_at=datetime(2026, 12, 1, 3, tzinfo=UTC))  # fmt: skip

    listing = client.get(reverse(LIST))

    assert (_cells(listing, "period_label"), _cells(listing, "issued_label")) == (
        [NOVEMBER],
        ["Nov 30, 2026"],
    )


# --- vs previous -----------------------------------------------------------------------------------


def test_the_change_is_against_the_previous_like_invoice_only(client, project, subscription):
    _login(client, project, Role.VIEWER)
    customer = subscription.customer
    sep_1, oct_1 = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)
    dec_1, dec_15 = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 15, tzinfo=UTC)
    # A prorated opening invoice, two whole months (and a void one between them), a partial month.
    _invoice(customer, subscription=subscription, start=datetime(2026, 8, 20, tzinfo=UTC), end=sep_1,
             total="35.48", billing_reason=BillingReason.SUBSCRIPTION_START)  # fmt: skip
    _invoice(customer, subscription=subscription, start=sep_1, end=oct_1, total="100.00")
    _invoice(
        customer, subscription=subscription, start=oct_1, end=NOV_1, total="999.00", status=InvoiceStatus.VOID
    )
    _invoice(customer, subscription=subscription, start=NOV_1, end=dec_1, total="120.00")
    _invoice(customer, subscription=subscription, start=dec_1, end=dec_15, total="46.67")

    listing = client.get(reverse(LIST))

    assert list(zip(_labels(listing), _cells(listing, "change"), strict=True)) == [
        (f"Draft · Initech · Dec 1{THIN}–{THIN}14, 2026", "— no like period"),  # not a whole month
        (f"Draft · Initech · {NOVEMBER}", "+$20.00 (+20 %)"),  # against September: October is void
        (f"Void · Initech · Oct 1{THIN}–{THIN}31, 2026", "+$899.00 (+899 %)"),
        (f"Draft · Initech · Sep 1{THIN}–{THIN}30, 2026", "— no like period"),  # not the opening
        (f"Draft · Initech · Aug 20{THIN}–{THIN}31, 2026", "— first"),
    ]
    assert 'title="No earlier invoice of this subscription bills the same kind of period' in (
        listing.content.decode()
    )


# --- filters and search ----------------------------------------------------------------------------


@pytest.fixture
def invoices(project, other_project):
    """Five invoices of two customers, seen on 10 December 2026."""
    initech = CustomerFactory(
        project=project, name="Initech", external_id="ini-42", email="ap@initech.example"
    )
    tokyo = CustomerFactory(project=project, name="Hooli KK", timezone="Asia/Tokyo", email="ap@hooli.example")
    oct_1, dec_1 = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    made = {
        "overdue": _invoice(initech, start=oct_1, end=NOV_1, status=InvoiceStatus.OPEN, number="ACME-000001",
                            total="1500.00", issued_at=NOV_1, due_at=datetime(2026, 12, 1, tzinfo=UTC)),
        "open": _invoice(initech, start=NOV_1, end=dec_1, status=InvoiceStatus.OPEN, number="ACME-000002",
                         total="12000.00", issued_at=dec_1, due_at=datetime(2026, 12, 31, tzinfo=UTC)),
        "paid": _invoice(initech, start=oct_1, end=NOV_1, status=InvoiceStatus.PAID, number="ACME-000003",
                         total="80.00", amount_paid=D("80.00"), issued_at=datetime(2026, 10, 31, 23, tzinfo=UTC),
                         due_at=NOV_1),
        # November in Tokyo starts on 31 October, 15:00 UTC
        "tokyo": _invoice(tokyo, start=datetime(2026, 10, 31, 15, tzinfo=UTC), end=datetime(2026, 11, 30, 15,
                          tzinfo=UTC), total="10.00"),
        "old": _invoice(tokyo, start=datetime(2025, 10, 31, 15, tzinfo=UTC), end=datetime(2025, 11, 30, 15,
                        tzinfo=UTC), total="10.00", billing_reason=BillingReason.CREDIT_PURCHASE),
    }  # fmt: skip
    other = CustomerFactory(project=other_project, name="Initech", email="ap@initech.example")
    _invoice(other, start=oct_1, end=NOV_1, status=InvoiceStatus.OPEN, number="GLOBEX-1",
             due_at=datetime(2026, 11, 2, tzinfo=UTC))  # fmt: skip
    return made


def _found(client, invoices, **params) -> set[str]:
    response = client.get(reverse(LIST), params)
    assert response.status_code == 200
    by_pk = {str(invoice.pk): name for name, invoice in invoices.items()}
    pks = re.findall(r'name="_selected_action" value="(\d+)"', response.content.decode())
    return {by_pk.get(pk, f"foreign {pk}") for pk in pks}


@time_machine.travel(DEC_10, tick=False)
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status__exact": "open"}, {"overdue", "open"}),
        ({"overdue": "yes"}, {"overdue"}),
        ({"overdue": "no"}, {"open", "paid", "tokyo", "old"}),
        ({"issued_month": "2026-11"}, {"overdue"}),
        ({"issued_month": "2026-10"}, {"paid"}),
        ({"period": "2026-11"}, {"open", "tokyo"}),
        ({"period": "2026-10"}, {"overdue", "paid"}),
        ({"period": "older"}, {"old"}),
        ({"due": "none"}, {"paid", "tokyo", "old"}),  # drafts owe nothing yet
        ({"due": "some"}, {"overdue", "open"}),
        ({"due": "1000"}, {"overdue", "open"}),
        ({"due": "10000"}, {"open"}),
        ({"billing_reason__exact": "credit_purchase"}, {"old"}),
        ({"q": "ap@hooli.example"}, {"tokyo", "old"}),
        ({"q": "ini-42"}, {"overdue", "open", "paid"}),
        ({"q": "ACME-000002"}, {"open"}),
    ],
)
def test_filters_and_search(client, project, invoices, params, expected):
    _login(client, project, Role.VIEWER)

    assert _found(client, invoices, **params) == expected


@time_machine.travel(DEC_10, tick=False)
def test_the_customer_filter_takes_an_id_or_a_number_and_the_project_filter_a_link(
    client, project, other_project, invoices
):
    user = _login(client, project, Role.VIEWER)
    MembershipFactory(project=other_project, user=user, role=Role.VIEWER)
    tokyo = invoices["tokyo"].customer

    by_id = client.get(reverse(LIST), {"customer": tokyo.public_id})

    assert _found(client, invoices, customer=tokyo.public_id) == {"tokyo", "old"}
    assert _found(client, invoices, customer=str(tokyo.pk)) == {"tokyo", "old"}
    assert f'value="{tokyo.public_id}"' in by_id.content.decode()
    assert "Hooli KK · " in by_id.content.decode()
    assert len(_found(client, invoices)) == 6
    assert _found(client, invoices, project=str(project.pk)) == set(invoices)


@time_machine.travel(DEC_10, tick=False)
@pytest.mark.parametrize(
    "params",
    [
        {"issued_month": "2026-13"},
        {"issued_month": "9999-12"},  # beyond what the calendar can add a month to
        {"period": "9999-12"},
        {"period": "0001-01"},
        {"period": "November"},
        {"due": "lots"},
        {"customer": "99999999999999999999999"},  # more digits than an id has
    ],
)
def test_a_malformed_filter_value_is_a_bad_filter_not_an_error(client, project, invoices, params):
    _login(client, project, Role.VIEWER)

    response = client.get(reverse(LIST), params)
    export = client.get(reverse("admin:invoicing_invoice_export"), params)

    assert (response.status_code, response.url) == (302, reverse(LIST) + "?e=1")
    assert export.status_code == 302


@time_machine.travel(DEC_10, tick=False)
def test_a_customer_value_that_is_no_ascii_id_is_looked_up_as_a_public_id(client, project, invoices):
    _login(client, project, Role.VIEWER)

    assert _found(client, invoices, customer="²") == set()


# --- bulk actions ----------------------------------------------------------------------------------


@time_machine.travel(NOV_1, tick=False)
def test_bulk_void_with_one_reason(client, project, other_project):
    user = _login(client, project, Role.BILLING_ADMIN)
    MembershipFactory(project=other_project, user=user, role=Role.VIEWER)
    first, second = issued_invoice(project), issued_invoice(project)
    draft = draft_invoice(project)
    foreign = issued_invoice(other_project)
    selected = [first.pk, second.pk, draft.pk, foreign.pk]

    confirm = client.post(reverse(LIST), {"action": "void_selected", "_selected_action": selected})
    done = client.post(
        reverse(LIST), {"action": "void_selected", "_selected_action": selected, "reason": "Sent twice"}
    )

    assert "Void these invoices?" in confirm.content.decode()
    assert f"<li>ACME-000001 · {first.customer.name} · Open · $100.00</li>" in confirm.content.decode()
    statuses = {i.pk: (i.status, i.void_reason) for i in Invoice.objects.filter(pk__in=selected)}
    assert statuses == {
        first.pk: (InvoiceStatus.VOID, "Sent twice"),
        second.pk: (InvoiceStatus.VOID, "Sent twice"),
        draft.pk: (InvoiceStatus.DRAFT, ""),
        foreign.pk: (InvoiceStatus.OPEN, ""),
    }
    voided = AuditLogEntry.objects.filter(action="invoice.voided")
    assert sorted(voided.values_list("object_id", flat=True)) == sorted([first.public_id, second.public_id])
    assert {entry.actor_user for entry in voided} == {user}
    assert Event.objects.filter(type="invoice.voided").count() == 2
    assert _messages(done) == [
        "1 selected row(s) of projects where you only read were left unchanged.",
        f"Draft · {draft.customer.name} · {NOVEMBER}: Only an open invoice can be voided; this one is draft.",
        "Voided 2 invoice(s).",
    ]


@time_machine.travel(NOV_1, tick=False)
def test_a_viewer_gets_no_bulk_void_and_nothing_changes(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project)

    listing = client.get(reverse(LIST))
    response = client.post(
        reverse(LIST), {"action": "void_selected", "_selected_action": [invoice.pk], "reason": "No"}
    )

    assert 'value="void_selected"' not in listing.content.decode()
    assert 'value="export_selected_csv"' in listing.content.decode()
    assert response.status_code in (200, 302)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.void_reason) == (InvoiceStatus.OPEN, "")
    assert not AuditLogEntry.objects.filter(action="invoice.voided").exists()


@time_machine.travel(NOV_1, tick=False)
def test_staff_of_another_project_void_nothing_of_this_one(client, project, other_project):
    _login(client, other_project, Role.OWNER)
    invoice = issued_invoice(project)

    client.post(reverse(LIST), {"action": "void_selected", "_selected_action": [invoice.pk], "reason": "No"})

    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.OPEN


@time_machine.travel(NOV_1, tick=False)
def test_bulk_send_queues_one_email_per_issued_invoice_and_refuses_drafts(client, project):
    user = _login(client, project, Role.OWNER)
    first, second = issued_invoice(project), issued_invoice(project)
    draft = draft_invoice(project)

    response = client.post(
        reverse(LIST), {"action": "send_selected", "_selected_action": [first.pk, second.pk, draft.pk]}
    )

    resent = InvoiceEmail.objects.filter(reason=EmailReason.RESEND)
    assert sorted(resent.values_list("invoice_id", flat=True)) == sorted([first.pk, second.pk])
    assert {email.requested_by for email in resent} == {user}
    assert _messages(response) == [
        f"Draft · {draft.customer.name} · {NOVEMBER}: Only an issued invoice can be sent; this one is draft.",
        "Queued 2 email(s).",
    ]


# --- CSV -------------------------------------------------------------------------------------------

INVOICE_HEADER = [
    "number", "public_id", "status", "billing_reason", "customer_name", "customer_external_id", "currency",
    "period_start", "period_end", "issued_at", "due_at", "subtotal", "discount", "tax", "total",
    "credits_applied", "amount_paid", "amount_due",
]  # fmt: skip
LINE_HEADER = [
    "invoice_number", "invoice_public_id", "line_type", "description", "period_start", "period_end",
    "quantity", "unit_price", "amount", "discount_amount", "tax_amount",
]  # fmt: skip


@time_machine.travel(NOV_1, tick=False)
def test_export_selected_invoices_and_their_lines(client, project):
    _login(client, project, Role.VIEWER)  # exporting is reading
    customer = CustomerFactory(project=project, name='=HYPERLINK("http://evil")', external_id="+42")
    invoice = issued_invoice(project, total="49.00", customer=customer)
    InvoiceLine.objects.filter(invoice=invoice).update(unit_price=D("49.000000000000"))
    InvoiceLine.objects.create(
        invoice=invoice, type=LineType.ADJUSTMENT, description="-10 goodwill", quantity=D("1"),
        amount=D("-10.0000"), period_start=NOV_1, period_end=NOV_1, position=2,
    )  # fmt: skip

    invoices = client.post(reverse(LIST), {"action": "export_selected_csv", "_selected_action": [invoice.pk]})
    lines = client.post(reverse(LIST), {"action": "export_lines_csv", "_selected_action": [invoice.pk]})

    assert invoices["Content-Type"] == "text/csv; charset=utf-8"
    assert invoices["Content-Disposition"] == 'attachment; filename="invoices.csv"'
    assert _csv(invoices) == [
        INVOICE_HEADER,
        [
            "ACME-000001", invoice.public_id, "open", "subscription_start", "'=HYPERLINK(\"http://evil\")",
            "'+42", "USD", "2026-11-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00",
            "2026-11-01T00:00:00+00:00", invoice.due_at.isoformat(), "49.00", "0.00", "0.00", "49.00", "0.00",
            "0.00", "49.00",
        ],
    ]  # fmt: skip
    assert _csv(lines) == [
        LINE_HEADER,
        ["ACME-000001", invoice.public_id, "base_fee", "Base fee", "2026-11-01T00:00:00+00:00",
         "2026-12-01T00:00:00+00:00", "1", "49", "49.00", "0.00", "0.00"],
        ["ACME-000001", invoice.public_id, "adjustment", "'-10 goodwill", "2026-11-01T00:00:00+00:00",
         "2026-11-01T00:00:00+00:00", "1", "", "-10.00", "0.00", "0.00"],
    ]  # fmt: skip


@time_machine.travel(NOV_1, tick=False)
def test_yen_export_without_decimals():
    project = ProjectFactory(name="Kaisha", currency="JPY", invoice_number_prefix="KA")
    client = Client()
    client.force_login(MembershipFactory(project=project, role=Role.VIEWER).user)
    invoice = issued_invoice(project, total="1235")

    rows = _csv(
        client.post(reverse(LIST), {"action": "export_selected_csv", "_selected_action": [invoice.pk]})
    )

    assert rows[1][INVOICE_HEADER.index("total")] == "1235"


@time_machine.travel(DEC_10, tick=False)
def test_the_whole_list_exports_as_filtered_and_searched(client, project, invoices):
    _login(client, project, Role.VIEWER)
    listing = client.get(reverse(LIST), {"overdue": "no", "q": "ini-42"})

    url = reverse("admin:invoicing_invoice_export")
    export = client.get(url, {"overdue": "no", "q": "ini-42"})
    everything = client.get(url)
    lines = client.get(reverse("admin:invoicing_invoice_export_lines"), {"status__exact": "paid"})

    assert f'href="{url}?overdue=no&amp;q=ini-42"' in listing.content.decode()
    assert [row[0] for row in _csv(export)] == ["number", "ACME-000003", "ACME-000002"]
    assert [row[0] for row in _csv(everything)][1:] == ["ACME-000003", "ACME-000002", "ACME-000001", "", ""]
    assert _csv(lines) == [LINE_HEADER]  # the paid invoice has no lines


@time_machine.travel(NOV_1, tick=False)
def test_the_review_queue_exports_what_it_lists(client, project):
    _login(client, project, Role.VIEWER)
    project.invoice_delivery = "review"
    project.save()
    held = draft_invoice(project)
    Invoice.objects.filter(pk=held.pk).update(status=InvoiceStatus.PENDING_REVIEW)
    issued_invoice(project)

    export = client.get(reverse("admin:invoicing_pendingreviewinvoice_export"))

    assert [row[1] for row in _csv(export)] == ["public_id", held.public_id]


def test_exports_are_for_staff_of_the_project(client, project, other_project):
    _login(client, other_project, Role.OWNER)
    with time_machine.travel(NOV_1, tick=False):
        issued_invoice(project)

    assert _csv(client.get(reverse("admin:invoicing_invoice_export"))) == [INVOICE_HEADER]
