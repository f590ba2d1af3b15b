"""Invoice emails into a real SMTP server (aiosmtpd): once per issue, again only on request."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from django_q.conf import Conf

from accounts.models import Scope
from invoicing.emails import RETRY_DELAYS, invoice_email_send
from invoicing.models import Document, EmailReason, EmailStatus, InvoiceEmail, InvoiceStatus, LineType
from invoicing.tasks import deliver_invoice, send_due_invoice_emails
from tests.conftest import api_client
from tests.invoicing.documents import invoice_of, pdf_text
from webhooks.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def sender(project):
    project.sender_name, project.sender_email = "Acme Billing", "billing@acme.test"
    project.reply_to_email = "accounts@acme.test"
    project.save()
    return project


def lines(*amounts: str) -> list[dict]:
    return [
        {"type": LineType.ADJUSTMENT, "description": f"Line {n}", "amount": amount}
        for n, amount in enumerate(amounts, start=1)
    ]


def attachment(message) -> tuple[str, bytes]:
    (part,) = list(message.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    return part.get_filename(), part.get_content()


@pytest.mark.parametrize(
    ("currency", "amounts", "expected"),
    [
        ("USD", ("1200.50", "0.49"), ["$1,200.50", "$0.49", "$1,200.99"]),
        ("JPY", ("1200", "35"), ["¥1,200", "¥35", "¥1,235"]),
        ("KWD", ("1.200", "0.035"), ["KWD1.200", "KWD0.035", "KWD1.235"]),
    ],
)
def test_an_issued_invoice_is_emailed_with_its_pdf(
    sender, smtp_server, tmp_path, currency, amounts, expected
):
    invoice = invoice_of(
        sender, lines(*amounts), status=InvoiceStatus.OPEN, currency=currency, name="Globex",
        email="ap@globex.test", invoice_emails=["invoices@globex.test", "cfo@globex.test"],
        invoice_cc=["audit@globex.test"],
    )  # fmt: skip

    deliver_invoice(invoice.pk)

    (message,) = smtp_server.messages
    assert message["From"] == "Acme Billing <billing@acme.test>"
    assert message["Reply-To"] == "accounts@acme.test"
    assert message["To"] == "invoices@globex.test, cfo@globex.test"
    assert message["Cc"] == "audit@globex.test"
    assert message["X-Envelope-To"] == "invoices@globex.test, cfo@globex.test, audit@globex.test"
    assert message["Subject"] == "Invoice ACME-000001 from Acme"
    body = message.get_body(("plain",)).get_content()
    assert f"Amount due: {expected[-1]}" in body
    filename, pdf = attachment(message)
    assert filename == "ACME-000001.pdf"
    text = pdf_text(pdf, tmp_path)
    for needle in ["ACME-000001", "Line 1", "Line 2", *expected]:
        assert needle in text, needle
    email = InvoiceEmail.objects.get()
    assert (email.status, email.reason, email.attempts) == (EmailStatus.SENT, EmailReason.ISSUED, 1)
    assert email.to == ["invoices@globex.test", "cfo@globex.test"]
    assert email.cc == ["audit@globex.test"]
    assert email.message_id == message["Message-ID"].strip()
    assert email.message_id == f"<{email.public_id}@acme.test>"
    assert Event.objects.filter(type="invoice.sent", object_id=invoice.public_id).count() == 1


def test_issuing_sends_after_commit(sender, smtp_server, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)
    with django_capture_on_commit_callbacks(execute=True):
        invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)

    # The subscription's opening invoice (for nothing) is issued and kept too, but not mailed.
    assert len(smtp_server.messages) == 1
    assert Document.objects.filter(invoice=invoice).exists()
    assert InvoiceEmail.objects.get().status == EmailStatus.SENT


def test_a_crash_between_render_and_send_then_a_rerun_sends_exactly_once(sender, smtp_server, monkeypatch):
    invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)

    def crash(**kwargs):
        raise SystemExit("worker killed after rendering")

    monkeypatch.setattr("invoicing.tasks.invoice_email_send", crash)
    with pytest.raises(SystemExit):
        deliver_invoice(invoice.pk)
    document = Document.objects.get()
    assert smtp_server.messages == []
    monkeypatch.undo()

    deliver_invoice(invoice.pk)
    deliver_invoice(invoice.pk)
    assert send_due_invoice_emails() == 0

    assert len(smtp_server.messages) == 1
    assert Document.objects.get() == document
    assert InvoiceEmail.objects.get().status == EmailStatus.SENT


def test_a_sender_that_died_mid_send_is_replaced_after_its_lease(sender, smtp_server):
    invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)
    email = InvoiceEmail.objects.get()
    InvoiceEmail.objects.filter(pk=email.pk).update(
        status=EmailStatus.SENDING, attempts=1, next_attempt_at=timezone.now() + timedelta(minutes=10)
    )

    assert send_due_invoice_emails() == 0  # still someone's
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert send_due_invoice_emails() == 1

    assert len(smtp_server.messages) == 1
    email.refresh_from_db()
    assert email.attempts == 2
    # The same Message-ID as the sender that died would have used: a copy is folded by mail clients.
    assert smtp_server.messages[0]["Message-ID"].strip() == f"<{email.public_id}@acme.test>"


def test_resend_sends_once_more(sender, smtp_server, django_capture_on_commit_callbacks, monkeypatch):
    invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)
    deliver_invoice(invoice.pk)
    monkeypatch.setattr(Conf, "SYNC", True)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client(sender).post(f"/v1/invoices/{invoice.public_id}/send")

    assert response.status_code == 202
    assert response.json()["reason"] == "resend"
    assert len(smtp_server.messages) == 2
    assert [email.reason for email in InvoiceEmail.objects.order_by("id")] == ["issued", "resend"]
    body = api_client(sender).get(f"/v1/invoices/{invoice.public_id}").json()
    assert body["last_delivery"]["reason"] == "resend"
    assert body["last_delivery"]["status"] == "sent"
    deliver_invoice(invoice.pk)
    assert len(smtp_server.messages) == 2


@pytest.mark.parametrize(
    ("status", "code"), [(InvoiceStatus.DRAFT, "invalid_transition"), (InvoiceStatus.OPEN, "no_recipient")]
)
def test_what_cannot_be_sent_is_refused_and_nothing_is_queued(sender, status, code):
    invoice = invoice_of(sender, lines("10.00"), status=status, email="")
    before = InvoiceEmail.objects.count()

    response = api_client(sender).post(f"/v1/invoices/{invoice.public_id}/send")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert InvoiceEmail.objects.count() == before


def test_a_read_only_key_cannot_send(sender):
    invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)

    response = api_client(sender, [Scope.BILLING_READ]).post(f"/v1/invoices/{invoice.public_id}/send")

    assert response.status_code == 403
    assert InvoiceEmail.objects.count() == 1


def test_a_failed_send_is_retried_with_backoff(sender, smtp_server):
    invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)
    smtp_server.refuse = True

    deliver_invoice(invoice.pk)

    email = InvoiceEmail.objects.get()
    assert (email.status, email.attempts) == (EmailStatus.RETRYING, 1)
    assert "451" in email.error
    assert email.next_attempt_at > timezone.now() + RETRY_DELAYS[0] - timedelta(seconds=5)
    assert send_due_invoice_emails() == 0  # not due yet
    smtp_server.refuse = False
    with time_machine.travel(timezone.now() + RETRY_DELAYS[0] + timedelta(seconds=1)):
        assert send_due_invoice_emails() == 1

    assert len(smtp_server.messages) == 1
    email.refresh_from_db()
    assert (email.status, email.attempts, email.error) == (EmailStatus.SENT, 2, "")


def test_after_the_last_retry_the_email_is_failed(sender, smtp_server):
    invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)
    smtp_server.refuse = True
    now = timezone.now()
    for delay in (timedelta(0), *RETRY_DELAYS):
        now += delay + timedelta(seconds=1)
        with time_machine.travel(now, tick=False):
            send_due_invoice_emails()

    email = InvoiceEmail.objects.get()
    assert (email.status, email.attempts, email.next_attempt_at) == (EmailStatus.FAILED, 6, None)
    assert smtp_server.messages == []


def test_a_customer_without_an_address_is_skipped(sender, smtp_server):
    invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN, email="")

    deliver_invoice(invoice.pk)

    assert InvoiceEmail.objects.get().status == EmailStatus.SKIPPED
    assert smtp_server.messages == []
    assert Document.objects.count() == 1


def test_a_project_that_does_not_email_invoices_still_keeps_their_pdf(sender, smtp_server):
    sender.email_invoices = False
    sender.save()
    invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)

    deliver_invoice(invoice.pk)

    assert not InvoiceEmail.objects.exists()
    assert smtp_server.messages == []
    assert Document.objects.get().invoice == invoice


def test_an_invoice_for_nothing_is_kept_but_not_mailed_unless_asked(sender, smtp_server):
    invoice = invoice_of(sender, lines("0.00"), status=InvoiceStatus.OPEN)

    deliver_invoice(invoice.pk)

    assert invoice.status == InvoiceStatus.PAID
    assert smtp_server.messages == []
    assert Document.objects.get().invoice == invoice
    assert api_client(sender).post(f"/v1/invoices/{invoice.public_id}/send").status_code == 202


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_on_one_email_send_it_once(sender, smtp_server):
    invoice = invoice_of(sender, lines("10.00"), status=InvoiceStatus.OPEN)
    email = InvoiceEmail.objects.get()
    barrier = threading.Barrier(4)
    results = []

    def worker():
        try:
            barrier.wait()
            results.append(invoice_email_send(email_id=email.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result is not None for result in results) == 1
    assert len(smtp_server.messages) == 1
    assert InvoiceEmail.objects.get(invoice=invoice).attempts == 1
