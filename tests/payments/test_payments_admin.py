"""The payments back office: recording and matching payments, refunds, the ledger, who may do what."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.urls import reverse

from accounts.models import AuditLogEntry, PaymentProcessor, Role
from invoicing.models import InvoiceStatus
from invoicing.services import credit_note_create
from payments.models import (
    BalanceEntry,
    EntryKind,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Payout,
    ProcessorEvent,
    Refund,
    RefundStatus,
)
from payments.services import credit_note_refund, payment_record
from tests.accounts.factories import MembershipFactory
from tests.invoicing.factories import issued_invoice
from webhooks.models import Event

pytestmark = pytest.mark.django_db

D = Decimal
NOV_2 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _login(client, project, role):
    user = MembershipFactory(project=project, role=role).user
    client.force_login(user)
    return user


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _record(client, invoice, **changes):
    form = {"amount": "40.00", "reference": "", "paid_at": "2026-11-01 10:00", "method": "bank_transfer"}
    return client.post(
        reverse("admin:invoicing_invoice_record_payment", args=[invoice.pk]), {**form, **changes}
    )


def _unmatched(project, amount: str = "100.00", reference: str = "pi_unknown") -> Payment:
    """A payment Stripe reported for no invoice we know (its ledger entry is not needed here)."""
    return Payment.objects.create(
        project=project, invoice=None, processor=PaymentProcessor.STRIPE, processor_reference=reference,
        method="card", currency="USD", amount=D(amount), net=D(amount), status=PaymentStatus.SUCCEEDED,
        paid_at=NOV_2,
    )  # fmt: skip


def _cells(response, column: str) -> list[str]:
    """The text of a column's cells, in a list page or an inline table, top to bottom."""
    cells = re.findall(rf'<td class="field-{column}[^"]*">(.*?)</td>', response.content.decode(), re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def _field(response, name: str) -> str:
    """The text of a read-only field on a record's page."""
    found = re.search(rf'field-{name}\b.*?<div class="readonly">(.*?)</div>', response.content.decode(), re.S)
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


# --- recording payments on the invoice's page -----------------------------------------------------


@time_machine.travel(NOV_2, tick=False)
def test_a_billing_admin_records_a_partial_then_the_full_payment(client, project):
    user = _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project, total="100.00")
    page_url = reverse("admin:invoicing_invoice_change", args=[invoice.pk])

    page = client.get(page_url)
    form = client.get(reverse("admin:invoicing_invoice_record_payment", args=[invoice.pk]))
    first = _record(client, invoice, amount="40.00", reference="BANK-1")
    invoice.refresh_from_db()
    after_first = (invoice.status, invoice.amount_paid, invoice.amount_due)
    second = _record(client, invoice, amount="60.00", reference="BANK-2", method="check")
    invoice.refresh_from_db()
    paid_page = client.get(page_url)

    assert "Record payment…" in page.content.decode()
    assert form.context["form"]["amount"].value() == D("100.00")
    assert "$100.00 is due." in form.content.decode()
    assert (first.status_code, first.url, _messages(first)) == (302, page_url, ["Payment recorded."])
    assert after_first == (InvoiceStatus.OPEN, D("40.00"), D("60.00"))
    assert second.status_code == 302
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (InvoiceStatus.PAID, D("100.00"), 0)
    payments = Payment.objects.filter(invoice=invoice).order_by("id")
    assert [(p.processor, p.processor_reference, p.method, p.amount, p.paid_at) for p in payments] == [
        ("manual", "BANK-1", "bank_transfer", D("40.00"), datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("manual", "BANK-2", "check", D("60.00"), datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ]
    recorded = AuditLogEntry.objects.filter(action="payment.recorded").order_by("id")
    assert [entry.actor_user for entry in recorded] == [user, user]
    content = paid_page.content.decode()
    assert _cells(paid_page, "amount_label") == ["$60.00", "$40.00"]
    assert ("BANK-1" in content, "BANK-2" in content) == (True, True)
    assert "Record payment…" not in content  # paid: nothing is due any more


@time_machine.travel(NOV_2, tick=False)
def test_an_overpayment_is_shown_on_the_form_and_nothing_is_recorded(client, project):
    _login(client, project, Role.OWNER)
    invoice = issued_invoice(project, total="100.00")
    events = Event.objects.count()

    response = _record(client, invoice, amount="100.01", reference="TOO-MUCH")

    invoice.refresh_from_db()
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "amount": ["100.01 is more than the 100.00 USD due on this invoice."]
    }
    assert 'value="TOO-MUCH"' in response.content.decode()
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.OPEN, D(0))
    assert (Payment.objects.count(), BalanceEntry.objects.count(), Event.objects.count()) == (0, 0, events)


@time_machine.travel(NOV_2, tick=False)
@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"reference": "BANK-1"}, "reference", "A payment with reference 'BANK-1' is already recorded."),
        ({"amount": "10.001"}, "amount", "USD amounts have at most 2 decimal places."),
        ({"paid_at": "2026-11-03 09:00"}, "paid_at", "A payment cannot be dated in the future."),
        (
            {"method": "bitcoin"},
            "method",
            "Select a valid choice. bitcoin is not one of the available choices.",
        ),
    ],
)
def test_what_the_service_refuses_is_shown_on_its_field(client, project, changes, field, message):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project, total="100.00")
    _record(client, invoice, amount="10.00", reference="BANK-1")

    response = _record(client, invoice, **{"amount": "20.00", **changes})

    assert response.status_code == 200
    assert response.context["form"].errors == {field: [message]}
    assert Payment.objects.count() == 1


@time_machine.travel(NOV_2, tick=False)
def test_an_uncollectible_invoice_still_takes_a_payment(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project, total="100.00")

    client.post(reverse("admin:invoicing_invoice_uncollectible", args=[invoice.pk]))
    page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk])).content.decode()
    _record(client, invoice, amount="100.00", paid_at="2026-11-02 08:00")

    invoice.refresh_from_db()
    assert ("Record payment…" in page, "Mark uncollectible" in page) == (True, False)
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.PAID, D("100.00"))


# --- the reconciliation queue ----------------------------------------------------------------------


def test_the_unmatched_queue_lists_a_payment_and_matching_it_pays_the_invoice(client, project):
    user = _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project, total="100.00")
    payment = _unmatched(project, amount="100.00")
    queue_url = reverse("admin:payments_unmatchedpayment_changelist")
    match_url = reverse("admin:payments_unmatchedpayment_match", args=[payment.pk])

    queue = client.get(queue_url)
    form = client.get(match_url)
    response = client.post(match_url, {"invoice": invoice.pk})
    after = client.get(queue_url)

    assert _cells(queue, "processor_reference") == ["pi_unknown"]
    assert _cells(queue, "amount_label") == ["$100.00"]
    assert _cells(queue, "match") == ["Match to invoice…"]
    options = re.findall(r'<option value="(\d+)">(.*?)</option>', form.content.decode())
    assert options == [(str(invoice.pk), f"ACME-000001 · {invoice.customer.name} · $100.00 due")]
    assert (response.status_code, response.url) == (302, queue_url)
    assert _messages(response) == ["Matched: the payment counts towards the invoice."]
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (payment.invoice, payment.customer) == (invoice, invoice.customer)
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.PAID, D("100.00"))
    assert AuditLogEntry.objects.get(action="payment.matched").actor_user == user
    assert _cells(after, "processor_reference") == []


def test_a_match_the_service_refuses_is_a_message_and_changes_nothing(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project, total="100.00")
    payment = _unmatched(project, amount="150.00")

    response = client.post(
        reverse("admin:payments_unmatchedpayment_match", args=[payment.pk]), {"invoice": invoice.pk}
    )

    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert response.status_code == 302
    assert _messages(response) == ["The invoice (open, 100.00 USD due) cannot take this payment."]
    assert (payment.invoice, invoice.status, invoice.amount_paid) == (None, InvoiceStatus.OPEN, D(0))


def test_only_open_invoices_of_the_payment_s_project_and_currency_are_offered(client, project, other_project):
    _login(client, project, Role.OWNER)
    payment = _unmatched(project)
    open_invoice, paid = issued_invoice(project), issued_invoice(project)
    payment_record(invoice=paid, amount=D("100.00"), actor=None)
    elsewhere = issued_invoice(other_project)
    url = reverse("admin:payments_unmatchedpayment_match", args=[payment.pk])

    offered = client.get(url).context["form"].fields["invoice"].queryset
    response = client.post(url, {"invoice": elsewhere.pk})

    assert list(offered) == [open_invoice]
    assert response.context["form"].errors == {
        "invoice": ["Select a valid choice. That choice is not one of the available choices."]
    }
    payment.refresh_from_db()
    assert payment.invoice is None


# --- refunds of credit notes -------------------------------------------------------------------


@time_machine.travel(NOV_2, tick=False)
def test_a_credit_note_s_refund_owed_is_refunded_from_its_page(client, project):
    user = _login(client, project, Role.BILLING_ADMIN)
    invoice = issued_invoice(project, total="100.00")
    payment = payment_record(invoice=invoice, amount=D("100.00"), actor=None, reference="BANK-1")
    note = credit_note_create(invoice=invoice, actor=None, reason="billing_error", amount=D("30.00"))
    note_url = reverse("admin:invoicing_creditnote_change", args=[note.pk])

    page = client.get(note_url).content.decode()
    form = client.get(reverse("admin:invoicing_creditnote_refund", args=[note.pk])).content.decode()
    response = client.post(
        reverse("admin:invoicing_creditnote_refund", args=[note.pk]), {"reference": "BANK-RF-1"}
    )
    after = client.get(note_url)
    invoice_page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))

    assert "Refund…" in page
    assert "$30.00 is owed back" in form
    assert (response.status_code, response.url) == (302, note_url)
    refund = Refund.objects.get()
    assert (refund.payment, refund.credit_note, refund.amount, refund.status, refund.processor_reference) == (
        payment, note, D("30.00"), RefundStatus.SUCCEEDED, "BANK-RF-1",
    )  # fmt: skip
    assert AuditLogEntry.objects.get(action="payment.refunded").actor_user == user
    assert "Refund…" not in after.content.decode()
    assert _cells(after, "amount_label") == ["$30.00"]
    assert _field(after, "refund_left") == "$0.00"
    assert _cells(invoice_page, "refunds_label") == [
        f"{refund.public_id} $30.00 for {note.number} (Succeeded)"
    ]


# --- who may do what -----------------------------------------------------------------------------


@time_machine.travel(NOV_2, tick=False)
def test_a_viewer_sees_no_buttons_and_is_refused_every_action(client, project):
    invoice = issued_invoice(project, total="100.00")
    paid = issued_invoice(project, total="100.00")
    payment_record(invoice=paid, amount=D("100.00"), actor=None)
    note = credit_note_create(invoice=paid, actor=None, reason="billing_error", amount=D("30.00"))
    unmatched = _unmatched(project)
    _login(client, project, Role.VIEWER)
    events = Event.objects.count()

    invoice_page = client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk])).content.decode()
    note_page = client.get(reverse("admin:invoicing_creditnote_change", args=[note.pk])).content.decode()
    queue = client.get(reverse("admin:payments_unmatchedpayment_changelist"))
    match_url = reverse("admin:payments_unmatchedpayment_match", args=[unmatched.pk])
    payment_page = client.get(reverse("admin:payments_unmatchedpayment_change", args=[unmatched.pk]))
    refused = [
        client.get(reverse("admin:invoicing_invoice_record_payment", args=[invoice.pk])),
        _record(client, invoice, amount="40.00"),
        client.post(reverse("admin:invoicing_invoice_uncollectible", args=[invoice.pk])),
        client.get(match_url),
        client.post(match_url, {"invoice": invoice.pk}),
        client.post(reverse("admin:invoicing_creditnote_refund", args=[note.pk]), {"reference": "X"}),
    ]

    assert ("Record payment…" in invoice_page, "Mark uncollectible" in invoice_page) == (False, False)
    assert "Refund…" not in note_page
    assert (_cells(queue, "amount_label"), _cells(queue, "match")) == (["$100.00"], ["-"])
    assert "Match to invoice…" not in payment_page.content.decode()
    assert [response.status_code for response in refused] == [403] * 6
    assert Payment.objects.count() == 2
    assert (Refund.objects.count(), Event.objects.count()) == (0, events)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (InvoiceStatus.OPEN, D(0))


def test_another_project_s_rows_are_neither_listed_nor_reachable(client, project, other_project):
    _login(client, project, Role.OWNER)
    theirs = issued_invoice(other_project)
    payment = payment_record(invoice=theirs, amount=D("100.00"), actor=None, paid_at=NOV_2)
    note = credit_note_create(invoice=theirs, actor=None, reason="billing_error", amount=D("30.00"))
    unmatched = _unmatched(other_project)
    entry = BalanceEntry.objects.get(payment=payment)

    lists = {
        name: _cells(client.get(reverse(f"admin:payments_{name}_changelist")), "project")
        for name in ("payment", "unmatchedpayment", "balanceentry", "refund", "payout", "processorevent")
    }
    pages = [
        client.get(reverse(f"admin:payments_{name}_change", args=[pk]))
        for name, pk in [
            ("payment", payment.pk),
            ("unmatchedpayment", unmatched.pk),
            ("balanceentry", entry.pk),
        ]
    ]
    actions = [
        _record(client, theirs, amount="1.00"),
        client.post(
            reverse("admin:payments_unmatchedpayment_match", args=[unmatched.pk]), {"invoice": theirs.pk}
        ),
        client.post(reverse("admin:invoicing_creditnote_refund", args=[note.pk])),
    ]

    assert lists == {name: [] for name in lists}
    # Django's admin answers a change URL it cannot find with a redirect to the index and a message.
    assert [(page.status_code, page.url) for page in pages] == [(302, reverse("admin:index"))] * 3
    assert all(_messages(page)[0].endswith("Perhaps it was deleted?") for page in pages)
    assert [response.status_code for response in actions] == [404] * 3


# --- the balance ledger --------------------------------------------------------------------------


@time_machine.travel(NOV_2, tick=False)
def test_the_ledger_shows_the_running_balance_per_currency_in_entry_order(client, project, other_project):
    _login(client, project, Role.VIEWER)
    later = NOV_2 + timedelta(days=2)

    def entry(target, kind, reference, currency, amount, available_at=NOV_2):
        return BalanceEntry.objects.create(
            project=target, kind=kind, reference=reference, currency=currency, amount=D(amount),
            available_at=available_at,
        )  # fmt: skip

    entry(project, EntryKind.PAYMENT, "pay_1", "USD", "40.00")
    entry(project, EntryKind.PAYMENT, "pay_2", "EUR", "2.33")  # another currency: another balance
    entry(other_project, EntryKind.PAYMENT, "pay_9", "USD", "1000.00")  # another project: not counted
    entry(project, EntryKind.PAYMENT, "pay_3", "USD", "60.00", available_at=later)
    entry(project, EntryKind.PAYMENT, "pay_4", "EUR", "2.33")
    entry(project, EntryKind.PAYMENT, "pay_5", "EUR", "2.33")  # 3 × 2.33: 6.989999… in floats
    entry(project, EntryKind.PAYOUT, "po_1", "USD", "-100.00")

    page = client.get(reverse("admin:payments_balanceentry_changelist"))
    in_usd = client.get(reverse("admin:payments_balanceentry_changelist"), {"currency": "USD"})

    assert page.status_code == 200
    # Newest first, as the page lists them; each row's balance is its currency's after it.
    assert list(zip(_cells(page, "amount_label"), _cells(page, "balance_label"), strict=True)) == [
        ("-$100.00", "$0.00"),
        ("€2.33", "€6.99"),
        ("€2.33", "€4.66"),
        ("$60.00", "$100.00"),
        ("€2.33", "€2.33"),
        ("$40.00", "$40.00"),
    ]
    assert _cells(in_usd, "balance_label") == ["$0.00", "$100.00", "$40.00"]
    assert _cells(in_usd, "available_label") == [
        "2026-11-02 09:00 (available)", "2026-11-04 09:00 (pending)", "2026-11-02 09:00 (available)",
    ]  # fmt: skip


# --- the record pages ------------------------------------------------------------------------------


@time_machine.travel(NOV_2, tick=False)
def test_a_payment_s_page_shows_its_refunds_and_ledger_entries(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project, total="100.00")
    payment = payment_record(invoice=invoice, amount=D("100.00"), actor=None, reference="BANK-1")
    note = credit_note_create(invoice=invoice, actor=None, reason="billing_error", amount=D("30.00"))
    credit_note_refund(credit_note=note, actor=None, reference="BANK-RF-1")

    listing = client.get(reverse("admin:payments_payment_changelist"), {"q": invoice.number})
    page = client.get(reverse("admin:payments_payment_change", args=[payment.pk]))

    assert _cells(listing, "amount_label") == ["$100.00"]
    assert _cells(listing, "refunded_label") == ["$30.00"]
    assert page.status_code == 200
    assert _field(page, "amount_label") == "$100.00"
    assert _field(page, "refunded_label") == "$30.00"
    assert _cells(page, "amount_label") == ["$30.00", "-$30.00", "$100.00"]  # its refund, its ledger entries
    assert _cells(page, "kind") == ["Refund", "Payment"]


def test_a_processor_event_s_payload_is_shown_pretty_printed(client, project):
    _login(client, project, Role.VIEWER)
    event = ProcessorEvent.objects.create(
        project=project, processor=PaymentProcessor.STRIPE, event_id="evt_1", type="charge.refunded",
        payload={"id": "evt_1", "data": {"object": {"amount": 3000}}}, outcome="refund rfd_1 entered",
    )  # fmt: skip

    listing = client.get(reverse("admin:payments_processorevent_changelist"))
    page = client.get(reverse("admin:payments_processorevent_change", args=[event.pk])).content.decode()

    assert _cells(listing, "outcome") == ["refund rfd_1 entered"]
    assert (
        '<pre style="white-space:pre-wrap;margin:0">{\n  &quot;id&quot;: &quot;evt_1&quot;,\n  &quot;data&quot;: {'
        in page
    )


@time_machine.travel(NOV_2, tick=False)
def test_every_payments_page_opens_read_only_for_a_viewer(client, project):
    _login(client, project, Role.VIEWER)
    invoice = issued_invoice(project, total="100.00")
    payment = payment_record(invoice=invoice, amount=D("100.00"), actor=None)
    note = credit_note_create(invoice=invoice, actor=None, reason="billing_error", amount=D("30.00"))
    refund = credit_note_refund(credit_note=note, actor=None, reference="BANK-RF-1")[0]
    payout = Payout.objects.create(
        project=project, processor=PaymentProcessor.MANUAL, currency="USD", amount=D(70)
    )
    method = PaymentMethod.objects.create(
        project=project, customer=invoice.customer, processor_id="pm_1", type="card", brand="visa", last4="4242",
        exp_month=3, exp_year=2030, is_default=True,
    )  # fmt: skip
    records = {
        "payment": payment, "unmatchedpayment": _unmatched(project), "refund": refund, "payout": payout,
        "balanceentry": BalanceEntry.objects.first(), "paymentmethod": method,
        "processorevent": ProcessorEvent.objects.create(
            project=project, processor=PaymentProcessor.STRIPE, event_id="evt_1", type="payout.paid", payload={}
        ),
    }  # fmt: skip

    for name, record in records.items():
        listing = client.get(reverse(f"admin:payments_{name}_changelist"))
        page = client.get(reverse(f"admin:payments_{name}_change", args=[record.pk]))
        assert (name, listing.status_code, page.status_code) == (name, 200, 200)
        assert b'name="_save"' not in page.content
        assert client.get(reverse(f"admin:payments_{name}_add")).status_code == 403
    assert _cells(client.get(reverse("admin:payments_paymentmethod_changelist")), "expiry") == ["03/2030"]


# --- amounts as the project's locale writes them --------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "currency", "amount", "fee", "refunded", "expected"),
    [
        ("en_US", "USD", "1234.50", "35.90", "0", ["$1,234.50", "$35.90", "$1,198.60", "$0.00"]),
        ("en_US", "JPY", "1235", "40", "100", ["¥1,235", "¥40", "¥1,195", "¥100"]),
        (
            "de_DE",
            "EUR",
            "1234.50",
            "0.25",
            "34.5",
            ["1.234,50\xa0€", "0,25\xa0€", "1.234,25\xa0€", "34,50\xa0€"],
        ),
    ],
)
def test_payment_amounts_read_in_their_currency_as_the_project_writes_money(
    client, project, locale, currency, amount, fee, refunded, expected
):
    project.locale = locale
    project.save(update_fields=["locale"])
    _login(client, project, Role.VIEWER)
    payment = Payment.objects.create(
        project=project, processor=PaymentProcessor.MANUAL, currency=currency, amount=D(amount), fee=D(fee),
        net=D(amount) - D(fee), amount_refunded=D(refunded), status=PaymentStatus.SUCCEEDED, paid_at=NOV_2,
    )  # fmt: skip

    listing = client.get(reverse("admin:payments_payment_changelist"))
    page = client.get(reverse("admin:payments_payment_change", args=[payment.pk]))

    columns = ["amount_label", "fee_label", "net_label", "refunded_label"]
    assert [_cells(listing, column)[0] for column in columns] == expected
    assert [_field(page, column) for column in columns] == expected


def test_the_payment_list_filters_by_the_month_paid_in_utc(client, project):
    _login(client, project, Role.VIEWER)
    for reference, paid_at in [
        ("oct-last", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)),
        ("nov-first", datetime(2026, 11, 1, tzinfo=UTC)),
        ("nov-last", datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)),
        ("dec-first", datetime(2026, 12, 1, tzinfo=UTC)),
    ]:
        Payment.objects.create(
            project=project, processor=PaymentProcessor.MANUAL, processor_reference=reference, currency="USD",
            amount=D("1.00"), status=PaymentStatus.SUCCEEDED, paid_at=paid_at,
        )  # fmt: skip

    november = client.get(reverse("admin:payments_payment_changelist"), {"paid_month": "2026-11"})

    assert sorted(_cells(november, "processor_reference")) == ["nov-first", "nov-last"]
