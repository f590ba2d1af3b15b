"""Invoice state changes: numbering, finalization, review, voiding, adjustments, credit notes.

What an invoice contains is computed in invoicing/billing.py; this module moves invoices through
their lifecycle (DESIGN §3):

    draft ──(period over, auto-send)──────────────► open ──► paid | void | uncollectible
    draft ──(period over, review)──► pending_review ──approve──► open
                                     pending_review ──reject───► void

Every change runs in one transaction with its event and audit record.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import Actor, audit_record
from billing_site.aggregates import MoneySum
from billing_site.errors import InvalidInput, InvalidState, Unprocessable
from billing_site.money import decimal_string, round_money
from catalog.pricing import to_decimal
from invoicing import credits
from invoicing.composition import invoice_compose
from invoicing.emails import invoice_issued_deliver
from invoicing.models import (
    EDITABLE_STATUSES,
    ISSUED_STATUSES,
    MAX_AMOUNT,
    WATERFALL_TYPES,
    BillingReason,
    CreditNote,
    CreditNoteLine,
    CreditNoteReason,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineType,
    NumberSequence,
)
from invoicing.signals import invoice_issued
from webhooks.payloads import payload_for, payload_issued
from webhooks.services import events_record

MAX_REASON = 2000
_NUMBER_NEXT = """
    INSERT INTO invoicing_numbersequence (project_id, kind, last_number) VALUES (%s, %s, 1)
    ON CONFLICT (project_id, kind) DO UPDATE SET last_number = invoicing_numbersequence.last_number + 1
    RETURNING last_number
"""


def number_next(*, project, kind: str) -> str:
    """The next number of the project's sequence, e.g. ACME-000042 (invoices) or ACME-CN-000007.

    Must run inside the transaction that issues the document: the sequence row stays locked until
    it commits (so two issuers queue), and a rollback gives the number back (so there is no gap).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("number_next() must run inside the transaction that issues the document")
    # One statement creates the row or increments it, and locks it (PostgreSQL and SQLite alike).
    with connection.cursor() as cursor:
        cursor.execute(_NUMBER_NEXT, [project.pk, kind])
        (number,) = cursor.fetchone()
    middle = "-CN" if kind == NumberSequence.Kind.CREDIT_NOTE else ""
    return f"{project.invoice_number_prefix}{middle}-{number:06d}"


def _user(actor: Actor):
    return None if actor is None or isinstance(actor, ApiKey) else actor


def _locked(invoice: Invoice) -> Invoice:
    # Only the invoice's row: the subscription is an outer join (a credit purchase has none), and
    # PostgreSQL cannot lock the nullable side of one.
    return (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("project", "customer", "subscription")
        .get(pk=invoice.pk)
    )


def _record(
    invoice: Invoice, event_type: str, *, actor: Actor, changes: dict | None = None, data: dict | None = None
) -> None:
    audit_record(
        project=invoice.project, actor=actor, action=event_type, target=invoice, changes=changes or {}
    )
    events_record(project=invoice.project, events=[(event_type, invoice, data)])


def invoice_record(invoice: Invoice, event_type: str) -> dict:
    """Announce a change the system made (draft created or repriced), without an audit entry.
    Returns the invoice's payload (see invoice_issue_composed)."""
    data = payload_for(invoice)
    events_record(project=invoice.project, events=[(event_type, invoice, data)])
    return data


def invoice_paid_record(invoice: Invoice, *, issued: dict | None = None) -> None:
    """Announce that an invoice is paid. Beside the invoice as the API shows it (`issued`: its
    payload as just issued, if the caller has it), the event carries JEB's summary fields:
    `invoice` (its ID), `usage` (the units its usage lines bill, as a decimal string), `status`
    and `amount` (what it came to, in minor units)."""
    data = dict(issued) if issued is not None else payload_for(invoice)
    usage = sum(
        (line.quantity for line in invoice.lines.all() if line.type in (LineType.USAGE, LineType.LATE_USAGE)),
        Decimal(0),
    )
    data.update(invoice=invoice.public_id, usage=decimal_string(usage), amount=data["total"]["amount"])
    events_record(project=invoice.project, events=[("invoice.paid", invoice, data)])
    if invoice.billing_reason == BillingReason.CREDIT_PURCHASE:
        # Every path to paid comes through here: the credits bought become usable.
        credits.credits_purchase_paid(invoice=invoice)


def _refuse(invoice: Invoice, requested: str, message: str) -> InvalidState:
    return InvalidState(message, current=invoice.status, requested=requested)


def _reason(reason: str | None) -> str:
    """A reason as given (not trimmed: docs/api.md); one with nothing but spaces says nothing."""
    reason = reason or ""
    if not reason.strip():
        raise Unprocessable(
            "Give a reason; it is kept with the invoice.", code="reason_required", param="reason"
        )
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"At most {MAX_REASON} characters.", code="max_length", param="reason")
    return reason


def invoice_delivery_for(invoice: Invoice) -> str:
    """`auto` or `review`: the customer's override, else the project's setting."""
    return invoice.customer.invoice_delivery or invoice.project.invoice_delivery


def invoice_issue(*, invoice: Invoice, actor: Actor) -> Invoice:
    """Number an invoice and make it open (due after the payment terms), or paid at once when it
    is for nothing: a zero invoice is still issued, as the record of the period's usage.

    Call inside the transaction that locked the invoice (period close, approval).
    """
    _issuable_check(invoice)
    now = timezone.now()
    # The coupons and prepaid credits it takes are what they hold now, under lock.
    invoice_compose(invoice=invoice, lock=True, at=now)
    return invoice_issue_composed(invoice=invoice, actor=actor, now=now)


def _issuable_check(invoice: Invoice) -> None:
    if invoice.status not in EDITABLE_STATUSES:
        raise _refuse(invoice, InvoiceStatus.OPEN, f"A {invoice.status} invoice cannot be issued.")


def invoice_issue_composed(
    *, invoice: Invoice, actor: Actor, now: datetime, composed: dict | None = None
) -> Invoice:
    """invoice_issue for an invoice whose waterfall the caller has just composed at `now` with the
    coupons and the wallet locked (invoice_compose(lock=True)), in this transaction: the period
    close, which composes each invoice once. `composed` is the invoice's payload recorded since
    (invoice_record): its events' payloads are built from it instead of afresh."""
    _issuable_check(invoice)
    # A purchase of prepaid credits has no subscription: the project's terms apply.
    terms = invoice.subscription.payment_terms_days if invoice.subscription_id else None
    terms = invoice.project.payment_terms_days if terms is None else terms
    invoice.number = number_next(project=invoice.project, kind=NumberSequence.Kind.INVOICE)
    invoice.issued_at, invoice.due_at = now, now + timedelta(days=terms)
    invoice.status = InvoiceStatus.PAID if invoice.amount_due == 0 else InvoiceStatus.OPEN
    invoice.save()
    credits.credits_applied_record(invoice=invoice)
    issued = payload_issued(invoice, composed)
    _record(invoice, "invoice.finalized", actor=actor, changes={"number": invoice.number}, data=issued)
    if invoice.status == InvoiceStatus.PAID:
        invoice_paid_record(invoice, issued=issued)
    invoice_issued_deliver(invoice=invoice)
    invoice_issued.send(sender=Invoice, invoice=invoice)
    return invoice


def invoice_submit_for_review(*, invoice: Invoice, actor: Actor) -> Invoice:
    """Hold an invoice whose period is over for a person to approve or reject."""
    if invoice.status != InvoiceStatus.DRAFT:
        raise _refuse(
            invoice, InvoiceStatus.PENDING_REVIEW, f"A {invoice.status} invoice cannot go to review."
        )
    invoice.status = InvoiceStatus.PENDING_REVIEW
    invoice.save(update_fields=["status", "updated_at"])
    _record(invoice, "invoice.pending_review", actor=actor)
    return invoice


def invoice_approve(*, invoice: Invoice, actor: Actor) -> Invoice:
    """Approve an invoice in review: it is numbered and issued. Records who approved it."""
    from invoicing.billing import invoice_rebuild  # deferred: billing imports this module

    with transaction.atomic():
        invoice = _locked(invoice)
        if invoice.status != InvoiceStatus.PENDING_REVIEW:
            raise _refuse(
                invoice,
                InvoiceStatus.OPEN,
                f"Only an invoice pending review can be approved; this one is {invoice.status}.",
            )
        invoice_rebuild(invoice=invoice)  # usage that arrived during the review counts
        invoice.reviewed_at, invoice.reviewed_by = timezone.now(), _user(actor)
        return invoice_issue(invoice=invoice, actor=actor)


def invoice_reject(*, invoice: Invoice, actor: Actor, reason: str) -> Invoice:
    """Reject an invoice in review: it is void, with the reason, and never numbered."""
    reason = _reason(reason)
    with transaction.atomic():
        invoice = _locked(invoice)
        if invoice.status != InvoiceStatus.PENDING_REVIEW:
            raise _refuse(
                invoice,
                InvoiceStatus.VOID,
                f"Only an invoice pending review can be rejected; this one is {invoice.status}.",
            )
        now = timezone.now()
        invoice.status, invoice.voided_at, invoice.void_reason = InvoiceStatus.VOID, now, reason
        invoice.reviewed_at, invoice.reviewed_by = now, _user(actor)
        invoice.save()
        _record(invoice, "invoice.voided", actor=actor, changes={"reason": reason, "rejected": True})
    return invoice


def invoice_void(*, invoice: Invoice, actor: Actor, reason: str) -> Invoice:
    """Void an open invoice (nothing is owed any more). Paid invoices take a credit note instead."""
    reason = _reason(reason)
    with transaction.atomic():
        invoice = _locked(invoice)
        if invoice.status != InvoiceStatus.OPEN:
            raise _refuse(
                invoice,
                InvoiceStatus.VOID,
                f"Only an open invoice can be voided; this one is {invoice.status}"
                + (" (issue a credit note instead)." if invoice.status == InvoiceStatus.PAID else "."),
            )
        invoice.status, invoice.voided_at, invoice.void_reason = InvoiceStatus.VOID, timezone.now(), reason
        invoice.save()
        # Prepaid credits it took are given back; an unpaid purchase's credits are never granted.
        credits.credits_release(invoice=invoice)
        if invoice.billing_reason == BillingReason.CREDIT_PURCHASE:
            credits.credits_purchase_voided(invoice=invoice)
        _record(invoice, "invoice.voided", actor=actor, changes={"reason": reason})
    return invoice


def invoice_mark_uncollectible(*, invoice: Invoice, actor: Actor) -> Invoice:
    """Give up collecting an open invoice (it stays issued and owed; a payment recorded later
    still settles it). Emits `invoice.marked_uncollectible`."""
    with transaction.atomic():
        invoice = _locked(invoice)
        if invoice.status != InvoiceStatus.OPEN:
            raise _refuse(
                invoice,
                InvoiceStatus.UNCOLLECTIBLE,
                f"Only an open invoice can be marked uncollectible; this one is {invoice.status}.",
            )
        invoice.status = InvoiceStatus.UNCOLLECTIBLE
        invoice.save(update_fields=["status", "updated_at"])
        _record(invoice, "invoice.marked_uncollectible", actor=actor)
    return invoice


def invoice_add_adjustment(
    *, invoice: Invoice, actor: Actor, amount: Any, description: str, reason: str
) -> InvoiceLine:
    """Add a manual line to a draft or an invoice in review: a charge (positive amount) or a
    credit (negative). Kept when the invoice is recomputed; the reason is recorded."""
    reason = _reason(reason)
    description = description or ""
    if not description.strip():
        raise Unprocessable(
            "Describe the line as the customer will read it.", code="required", param="description"
        )
    with transaction.atomic():
        invoice = _locked(invoice)
        if invoice.status not in EDITABLE_STATUSES:
            raise _refuse(
                invoice, "adjustment", f"A {invoice.status} invoice cannot change; issue a credit note."
            )
        value = to_decimal(amount, param="amount")
        rounded = round_money(value, invoice.currency)
        if rounded != value:
            raise InvalidInput(
                f"{invoice.currency} amounts have at most {-rounded.as_tuple().exponent} decimal places.",
                code="too_many_decimal_places",
                param="amount",
            )
        if rounded == 0:
            raise Unprocessable(
                "An adjustment of nothing changes nothing.", code="zero_amount", param="amount"
            )
        if abs(invoice.total + rounded) >= MAX_AMOUNT:
            raise Unprocessable(
                f"The invoice would come to more than it can hold (below {MAX_AMOUNT:,}).",
                code="amount_too_large",
                param="amount",
            )
        line = InvoiceLine.objects.create(
            invoice=invoice,
            type=LineType.ADJUSTMENT if rounded > 0 else LineType.CREDIT,
            description=description[:300],
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            quantity=Decimal(1),
            unit_price=rounded,
            amount=rounded,
            is_manual=True,
            reason=reason,
            created_by=_user(actor),
            position=10_000 + invoice.lines.count(),
        )
        invoice_compose(invoice=invoice)
        _record(
            invoice,
            "invoice.updated",
            actor=actor,
            changes={"adjustment": str(rounded), "description": description, "reason": reason},
        )
    return line


def credit_note_create(
    *,
    invoice: Invoice,
    actor: Actor,
    reason: str,
    memo: str = "",
    lines: list[dict[str, Any]] | None = None,
    amount: Decimal | None = None,
) -> CreditNote:
    """Credit an issued invoice: whole (neither `lines` nor `amount`), per line
    (`[{"line": InvoiceLine, "amount"}]`, the amount defaulting to the whole line), or by an
    `amount` not tied to a line.

    The credit first reduces what is still due; any excess (on a paid invoice) is recorded as a
    refund owed to the customer. A line is never credited beyond its amount, nor an invoice
    beyond its total. An open invoice credited down to nothing due is paid.
    """
    if reason not in CreditNoteReason.values:
        raise InvalidInput(
            f"reason is one of {', '.join(CreditNoteReason.values)}.", code="invalid_choice", param="reason"
        )
    with transaction.atomic():
        invoice = _locked(invoice)
        if invoice.status not in ISSUED_STATUSES:
            raise _refuse(
                invoice,
                "credit_note",
                f"Only an issued invoice can be credited; this one is {invoice.status}.",
            )
        if invoice.billing_reason == BillingReason.CREDIT_PURCHASE:
            raise Unprocessable(
                "A purchase of prepaid credits is not credited: void its invoice while it is unpaid; "
                "once paid, void the grant and refund the payment.",
                code="credit_purchase_not_creditable",
            )
        credited_by_line = _credited_by_line(invoice)
        items = _credit_items(invoice, lines, amount, credited_by_line)
        amount = sum((item["amount"] for item in items), Decimal(0))
        already = invoice.credit_notes.aggregate(total=MoneySum("amount"))["total"] or Decimal(0)
        if amount <= 0:
            raise Unprocessable("Nothing is left to credit on this invoice.", code="nothing_to_credit")
        if already + amount > invoice.total:
            raise Unprocessable(
                f"This would credit {already + amount} of a {invoice.total} invoice.",
                code="credit_exceeds_total",
            )
        reduces_due = min(amount, invoice.amount_due)
        # Beyond what is due, the credits the invoice took go back to the wallet first; the rest
        # was paid in money, a refund owed.
        returned = min(amount - reduces_due, credits.credits_returnable(invoice))
        note = CreditNote.objects.create(
            project=invoice.project,
            invoice=invoice,
            reason=reason,
            memo=memo,
            amount=amount,
            amount_credited=reduces_due,
            credits_returned=returned,
            refund_owed=amount - reduces_due - returned,
            created_by=_user(actor),
            number=number_next(project=invoice.project, kind=NumberSequence.Kind.CREDIT_NOTE),
        )
        CreditNoteLine.objects.bulk_create(
            CreditNoteLine(
                credit_note=note,
                invoice_line=item["line"],
                description=item["description"],
                amount=item["amount"],
            )
            for item in items
        )
        if returned:
            credits.credits_return(invoice=invoice, credit_note=note, amount=returned)
        invoice.amount_credited += reduces_due
        if invoice.status == InvoiceStatus.OPEN and invoice.amount_due == 0:
            invoice.status = InvoiceStatus.PAID
        invoice.save()
        audit_record(
            project=invoice.project,
            actor=actor,
            action="credit_note.created",
            target=note,
            changes={"invoice": invoice.public_id, "amount": str(amount), "reason": reason},
        )
        events_record(
            project=invoice.project,
            events=[("credit_note.created", note, None), ("invoice.updated", invoice, None)],
        )
        if invoice.status == InvoiceStatus.PAID and reduces_due and invoice.amount_paid == 0:
            invoice_paid_record(invoice)
    return note


def _credited_by_line(invoice: Invoice) -> dict[int, Decimal]:
    rows = (
        CreditNoteLine.objects.filter(credit_note__invoice=invoice, invoice_line__isnull=False)
        .values("invoice_line")
        .annotate(total=MoneySum("amount"))
    )
    return {row["invoice_line"]: row["total"] for row in rows}


def _credit_items(
    invoice: Invoice, lines, amount: Decimal | None, credited_by_line: dict[int, Decimal]
) -> list[dict[str, Any]]:
    if lines and amount is not None:
        raise Unprocessable("Give lines or an amount, not both.", code="lines_or_amount", param="amount")
    if not lines:
        description = f"Credit for invoice {invoice.number}"
        if amount is None:
            already = invoice.credit_notes.aggregate(total=MoneySum("amount"))["total"] or Decimal(0)
            return [{"line": None, "description": description, "amount": invoice.total - already}]
        return [
            {"line": None, "description": description, "amount": _credit_amount(invoice, amount, "amount")}
        ]
    items = []
    for index, item in enumerate(lines):
        line: InvoiceLine = item["line"]
        if line.invoice_id != invoice.pk:
            raise Unprocessable(
                "This line is not on the invoice.", code="unknown_line", param=f"lines[{index}].line"
            )
        if line.type in WATERFALL_TYPES:
            raise Unprocessable(
                "Discount, tax and prepaid-credit lines follow the lines they come from: credit those.",
                code="line_not_creditable",
                param=f"lines[{index}].line",
            )
        charged = line_charged(line)
        amount = _credit_amount(invoice, item.get("amount", charged), f"lines[{index}].amount")
        left = charged - credited_by_line.get(line.pk, Decimal(0))
        if amount > left:
            raise Unprocessable(
                f"Only {left} of this line is left to credit.",
                code="credit_exceeds_line",
                param=f"lines[{index}].amount",
            )
        items.append({"line": line, "description": line.description, "amount": amount})
    return items


def line_charged(line: InvoiceLine) -> Decimal:
    """What a fee or usage line cost the customer: its amount, less its discount, plus the tax
    added on it (an inclusive tax is already in the amount)."""
    added = sum((Decimal(tax["amount"]) for tax in line.taxes if not tax["inclusive"]), Decimal(0))
    return line.amount - line.discount_amount + added


def _credit_amount(invoice: Invoice, value: Any, param: str) -> Decimal:
    amount = to_decimal(value, param=param)
    if round_money(amount, invoice.currency) != amount or amount <= 0:
        raise InvalidInput("A positive amount in the invoice's currency.", code="invalid_amount", param=param)
    return amount
