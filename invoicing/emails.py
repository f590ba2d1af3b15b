"""Invoice emails through django-anymail (docs/documents.md): from the project's sender address,
to the customer's billing addresses, with the PDF attached, logged one row per sending.

Once, not twice: issuing an invoice creates its email row in the same transaction (a unique
constraint allows one per invoice), and a sender claims a row by a conditional UPDATE before it
talks to the mail server, so two workers, a retried task and the scheduled run never send the same
row twice. A sender that dies after claiming leaves the row `sending` until its lease runs out;
the scheduled run then sends it again (the only case of a second copy: a crash after the server
accepted the message and before the row was marked sent, and the copy carries the same Message-ID,
which mail clients use to fold duplicates). Another email of the same invoice exists only when
someone asks for a resend.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import formataddr

from anymail.message import AnymailMessage
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.template import Context, Engine, TemplateSyntaxError
from django.template.loader import render_to_string
from django.utils import timezone
from django_q.tasks import async_task

from accounts.models import ApiKey
from accounts.services import Actor, audit_record
from billing_site.errors import InvalidState, Unprocessable
from invoicing.documents import invoice_context, invoice_pdf, pdf_name, sample_invoice
from invoicing.models import ISSUED_STATUSES, EmailReason, EmailStatus, Invoice, InvoiceEmail
from webhooks.services import event_record

logger = logging.getLogger(__name__)
SUBJECT_TEMPLATE = "invoicing/email_subject.txt"
BODY_TEMPLATE = "invoicing/email_body.txt"
# After a failed attempt, the next one waits this long; after the last, the email is `failed`
# (shown in the admin, where it can be sent again).
RETRY_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
# A claimed email not marked sent or failed by then is presumed abandoned by a dead sender.
CLAIM_LEASE = timedelta(minutes=10)
DUE_LIMIT = 500
# Project templates are plain text: nothing escaped, no file loaders.
_TEXT_ENGINE = Engine(debug=False, loaders=[], libraries={}, autoescape=False)


@dataclass
class ComposedEmail:
    from_email: str
    reply_to: list[str]
    to: list[str]
    cc: list[str]
    subject: str
    body: str
    attachment: str
    message_id: str = field(default="")


def recipients(customer) -> tuple[list[str], list[str]]:
    """The customer's invoice addresses (their email unless overridden) and the copies."""
    to = list(customer.invoice_emails) or ([customer.email] if customer.email else [])
    cc = [address for address in customer.invoice_cc if address not in to]
    return to, cc


def sender(project) -> str:
    address = project.sender_email or settings.DEFAULT_FROM_EMAIL
    return formataddr((project.sender_name or project.company_name or project.name, address))


def _text(context: dict, *, template: str, override: str) -> str:
    if override:
        return _TEXT_ENGINE.from_string(override).render(Context(context))
    return render_to_string(template, context)


def _compose(invoice: Invoice, context: dict) -> ComposedEmail:
    project = invoice.project
    to, cc = recipients(invoice.customer)
    subject = _text(context, template=SUBJECT_TEMPLATE, override=project.email_subject_template)
    return ComposedEmail(
        from_email=sender(project),
        reply_to=[project.reply_to_email] if project.reply_to_email else [],
        to=to,
        cc=cc,
        subject=" ".join(subject.split())[:300],
        body=_text(context, template=BODY_TEMPLATE, override=project.email_body_template),
        attachment=pdf_name(invoice.number, invoice.public_id),
    )


def email_compose(invoice: Invoice) -> ComposedEmail:
    """The email of an invoice as it would be sent now (the admin's preview shows it)."""
    return _compose(invoice, invoice_context(invoice))


def email_templates_check(project, *, subject: str, body: str) -> None:
    """Refuse subject or body templates that do not render, before they are saved."""
    invoice, lines = sample_invoice(project)
    context = invoice_context(invoice, lines=lines)
    for name, source in (("subject", subject), ("body", body)):
        try:
            _TEXT_ENGINE.from_string(source).render(Context(context))
        except TemplateSyntaxError as exc:
            message = f"The template does not compile: {exc}"
            raise ValidationError({f"email_{name}_template": message}) from exc


# --- queueing ----------------------------------------------------------------------------------


def invoice_email_queue(*, invoice: Invoice, reason: str, actor: Actor = None) -> InvoiceEmail:
    """Create an email of an invoice, due now, sent after the current transaction commits."""
    return InvoiceEmail.objects.create(
        project=invoice.project,
        invoice=invoice,
        reason=reason,
        next_attempt_at=timezone.now(),
        requested_by=None if actor is None or isinstance(actor, ApiKey) else actor,
    )


def invoice_issued_deliver(*, invoice: Invoice) -> None:
    """On issuing (inside its transaction): the invoice's one email, if the project sends them
    and something is billed (an invoice for nothing, such as the opening invoice of a metered
    plan, is issued and kept but not mailed; it can still be sent on request); after commit, its
    PDF is rendered and kept, then the email sent (invoicing.tasks)."""
    if invoice.project.email_invoices and invoice.total != 0:
        invoice_email_queue(invoice=invoice, reason=EmailReason.ISSUED)
    transaction.on_commit(lambda: async_task("invoicing.tasks.deliver_invoice", invoice.pk), robust=True)


def invoice_email_resend(*, invoice: Invoice, actor: Actor) -> InvoiceEmail:
    """Send an issued invoice again, on request: a new email row, whatever was sent before."""
    if invoice.status not in ISSUED_STATUSES:
        raise InvalidState(
            f"Only an issued invoice can be sent; this one is {invoice.status}.",
            current=invoice.status,
            requested="send",
        )
    if not recipients(invoice.customer)[0]:
        raise Unprocessable(
            "The customer has no email address to send the invoice to; set their email or "
            "invoice_emails first.",
            code="no_recipient",
        )
    with transaction.atomic():
        email = invoice_email_queue(invoice=invoice, reason=EmailReason.RESEND, actor=actor)
        audit_record(
            project=invoice.project, actor=actor, action="invoice.resend", target=invoice, changes={}
        )
        transaction.on_commit(lambda: async_task("invoicing.tasks.send_invoice_email", email.pk), robust=True)
    return email


# --- sending -----------------------------------------------------------------------------------


def _claim(email_id: int) -> bool:
    now = timezone.now()
    claimed = InvoiceEmail.objects.filter(
        pk=email_id,
        status__in=[EmailStatus.QUEUED, EmailStatus.RETRYING, EmailStatus.SENDING],
        next_attempt_at__lte=now,
    ).update(status=EmailStatus.SENDING, next_attempt_at=now + CLAIM_LEASE, attempts=F("attempts") + 1)
    return claimed == 1


def invoice_email_send(*, email_id: int) -> InvoiceEmail | None:
    """Send one email if it is due and nobody else is sending it; None when it was not ours."""
    if not _claim(email_id):
        return None
    email = InvoiceEmail.objects.select_related("invoice__project", "invoice__customer").get(pk=email_id)
    invoice = email.invoice
    try:
        composed = email_compose(invoice)
        # Derived from the row alone, so a second sending of the row (after a crash that lost the
        # record of the first) carries the same Message-ID, which mail clients fold.
        composed.message_id = f"<{email.public_id}@{composed.from_email.rpartition('@')[2].rstrip('>')}>"
        email.from_email, email.reply_to, email.to, email.cc = (
            composed.from_email,
            composed.reply_to,
            composed.to,
            composed.cc,
        )
        email.subject, email.message_id = composed.subject, composed.message_id
        if not composed.to:
            return _finish(email, EmailStatus.SKIPPED, error="The customer has no email address.")
        message_id = _deliver(composed, invoice_pdf(invoice), email)
    except Exception as exc:  # any failure of rendering or sending is retried, then reported
        logger.warning("Invoice email %s failed (attempt %s)", email.public_id, email.attempts, exc_info=True)
        return _failed(email, f"{type(exc).__name__}: {exc}")
    email.message_id = message_id or email.message_id
    return _finish(email, EmailStatus.SENT)


def _deliver(composed: ComposedEmail, pdf: bytes, email: InvoiceEmail) -> str:
    message = AnymailMessage(
        subject=composed.subject,
        body=composed.body,
        from_email=composed.from_email,
        to=composed.to,
        cc=composed.cc,
        reply_to=composed.reply_to,
        headers={"Message-ID": composed.message_id},
        metadata={"invoice": email.invoice.public_id, "email": email.public_id},
        tags=["invoice"],
    )
    message.attach(composed.attachment, pdf, "application/pdf")
    message.send()
    # Anymail backends report the provider's id; the SMTP backend keeps our Message-ID.
    status = getattr(message, "anymail_status", None)
    return (status.message_id if status is not None else None) or ""


def _finish(email: InvoiceEmail, status: str, *, error: str = "") -> InvoiceEmail:
    with transaction.atomic():
        email.status, email.error, email.next_attempt_at = status, error, None
        if status == EmailStatus.SENT:
            email.sent_at = timezone.now()
        email.save()
        if status == EmailStatus.SENT:
            event_record(project=email.project, type="invoice.sent", obj=email.invoice)
    return email


def _failed(email: InvoiceEmail, error: str) -> InvoiceEmail:
    if email.attempts > len(RETRY_DELAYS):
        return _finish(email, EmailStatus.FAILED, error=error)
    email.status, email.error = EmailStatus.RETRYING, error[:2000]
    email.next_attempt_at = timezone.now() + RETRY_DELAYS[email.attempts - 1]
    email.save()
    return email


def invoice_emails_due(*, now, limit: int = DUE_LIMIT) -> list[int]:
    """Emails whose time has come: retries, first attempts whose task was lost, abandoned claims."""
    return list(
        InvoiceEmail.objects.filter(
            status__in=[EmailStatus.QUEUED, EmailStatus.RETRYING, EmailStatus.SENDING],
            next_attempt_at__lte=now,
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
