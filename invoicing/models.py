"""Invoices, their lines, credit notes and the gap-free number sequences.

Amounts are Decimals rounded to the currency's minor unit (at most 4 places: CLF), stored
exactly; an invoice's total is the sum of its lines. Nothing here is deleted (PROTECT), and an
invoice that has left draft/review is never changed again: corrections are credit notes or
lines on a later invoice.
"""

from decimal import Decimal

from django.conf import settings
from django.core.files.storage import storages
from django.db import models
from django.db.models import Q

from accounts.models import Project
from billing_site.ids import PublicIdField
from catalog.models import Charge, Customer, Plan
from catalog.pricing import PRICE_DIGITS, PRICE_PLACES
from meters.models import Meter
from subscriptions.models import Subscription

AMOUNT_DIGITS = 20
AMOUNT_PLACES = 4  # the largest minor-unit exponent in ISO 4217 (CLF)
QUANTITY_DIGITS = 38
# What a line amount, an invoice total and a line quantity can hold (exclusive bounds).
MAX_AMOUNT = Decimal(10) ** (AMOUNT_DIGITS - AMOUNT_PLACES)
MAX_QUANTITY = Decimal(10) ** (QUANTITY_DIGITS - PRICE_PLACES)


def _amount(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, **kwargs)


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PENDING_REVIEW = "pending_review", "Pending review"
    OPEN = "open", "Open"
    PAID = "paid", "Paid"
    VOID = "void", "Void"
    UNCOLLECTIBLE = "uncollectible", "Uncollectible"


# Statuses in which an invoice is still computed and may change.
EDITABLE_STATUSES = frozenset({InvoiceStatus.DRAFT, InvoiceStatus.PENDING_REVIEW})
# Statuses of an invoice that was issued to the customer (it has a number).
ISSUED_STATUSES = frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE})


class BillingReason(models.TextChoices):
    SUBSCRIPTION_START = "subscription_start", "Start of the subscription (fees in advance)"
    SUBSCRIPTION_CYCLE = "subscription_cycle", "End of a billing period"
    SUBSCRIPTION_UPDATE = "subscription_update", "Plan change invoiced at once (prorations)"
    CREDIT_PURCHASE = "credit_purchase", "Purchase of prepaid credits"


class Invoice(models.Model):
    """One customer's bill at one billing point of one subscription.

    `period_start`/`period_end` is the usage period the invoice closes ([start, start) for the
    opening invoice issued when the subscription starts); lines carry their own periods (an
    advance fee covers the next period). The number is assigned when the invoice leaves
    draft/review, from the project's gap-free sequence.
    """

    public_id = PublicIdField(prefix="in")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    # Every invoice but a purchase of prepaid credits bills a subscription.
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="invoices"
    )
    billing_reason = models.CharField(max_length=20, choices=BillingReason.choices)
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT)
    currency = models.CharField(max_length=3)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    number = models.CharField(max_length=40, null=True, blank=True)

    # The waterfall (invoicing/waterfall.py): fees and usage (subtotal) - discount + tax (the
    # exclusive part) = total; then prepaid credits; amount due = total - credits applied - credit
    # notes - payments. `total` is the sum of the lines but the credit lines and inclusive taxes.
    subtotal = _amount(default=Decimal(0))
    discount = _amount(default=Decimal(0))  # positive: what coupons took off
    tax = _amount(default=Decimal(0))  # all tax, inclusive and exclusive
    total = _amount(default=Decimal(0))
    credits_applied = _amount(default=Decimal(0))  # prepaid credits, positive
    tax_note = models.TextField(
        blank=True, help_text="The legal note of a reverse-charge or exempt customer."
    )
    amount_credited = _amount(default=Decimal(0))  # credit notes against what is due
    amount_paid = _amount(default=Decimal(0))

    issued_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Closing a period twice, or two closes racing, cannot bill it twice.
            models.UniqueConstraint(
                fields=["subscription", "period_start"],
                condition=Q(billing_reason=BillingReason.SUBSCRIPTION_CYCLE),
                name="invoice_one_per_period",
            ),
            models.UniqueConstraint(
                fields=["subscription"],
                condition=Q(billing_reason=BillingReason.SUBSCRIPTION_START),
                name="invoice_one_opening",
            ),
            # A plan change's prorations invoiced at once (always_invoice): once per change.
            models.UniqueConstraint(
                fields=["subscription", "period_start"],
                condition=Q(billing_reason=BillingReason.SUBSCRIPTION_UPDATE),
                name="invoice_one_per_change",
            ),
            models.UniqueConstraint(fields=["project", "number"], name="invoice_number_unique"),
            models.CheckConstraint(
                condition=Q(subscription__isnull=False) | Q(billing_reason="credit_purchase"),
                name="invoice_subscription_required",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "status", "id"], name="invoice_project_status"),
            models.Index(fields=["customer", "status"], name="invoice_customer_status"),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft {self.public_id}"

    @property
    def amount_due(self):
        return max(self.total - self.credits_applied - self.amount_credited - self.amount_paid, 0)


class LineType(models.TextChoices):
    BASE_FEE = "base_fee", "Base fee"
    FIXED_FEE = "fixed_fee", "Fixed fee"
    USAGE = "usage", "Usage"
    LATE_USAGE = "late_usage", "Late usage"
    ADJUSTMENT = "adjustment", "Adjustment"
    CREDIT = "credit", "Credit"
    MINIMUM = "minimum", "Charge minimum (true-up)"
    COMMITMENT = "commitment", "Minimum commitment (true-up)"
    CREDIT_PURCHASE = "credit_purchase", "Prepaid credits purchased"
    DISCOUNT = "discount", "Discount"
    TAX = "tax", "Tax"
    PREPAID_CREDIT = "prepaid_credit", "Prepaid credits applied"


# The waterfall's steps after fees and usage: computed from the lines above them, never by hand.
WATERFALL_TYPES = frozenset({LineType.DISCOUNT, LineType.TAX, LineType.PREPAID_CREDIT})


class InvoiceLine(models.Model):
    """One line of an invoice, rounded once. Computed lines are rebuilt while the invoice is a
    draft or in review; manual lines (adjustments with a reason) are kept."""

    public_id = PublicIdField(prefix="il")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    type = models.CharField(max_length=16, choices=LineType.choices)
    description = models.CharField(max_length=300)
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    charge = models.ForeignKey(Charge, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    meter = models.ForeignKey(Meter, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    quantity = models.DecimalField(
        max_digits=QUANTITY_DIGITS, decimal_places=PRICE_PLACES, default=Decimal(0)
    )
    unit_price = models.DecimalField(
        max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES, null=True, blank=True
    )
    amount = _amount()
    # [{"tier", "units", "unit_price", "flat_fee", "amount"}] as decimal strings; amounts unrounded.
    tiers = models.JSONField(default=list, blank=True)
    # Usage lines: the period's total quantity billed up to with this line (late usage adds to it).
    cumulative_quantity = models.DecimalField(
        max_digits=QUANTITY_DIGITS, decimal_places=PRICE_PLACES, null=True, blank=True
    )
    # Late usage: the finalized invoice whose period the usage belongs to.
    original_invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="late_lines"
    )
    # Fee and usage lines: the discount taken off them (positive) and their tax, with each rate's
    # part: [{"tax_rate", "name", "percentage", "inclusive", "jurisdiction", "amount"}].
    discount_amount = _amount(default=Decimal(0))
    tax_amount = _amount(default=Decimal(0))
    taxes = models.JSONField(default=list, blank=True)
    # Waterfall lines: what each stands for (a discount line's coupon, a tax line's rate and the
    # amount it was levied on, a prepaid-credit line's grant).
    coupon_redemption = models.ForeignKey(
        "catalog.CouponRedemption", null=True, blank=True, on_delete=models.PROTECT, related_name="lines"
    )
    tax_rate = models.ForeignKey(
        "catalog.TaxRate", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    taxable_amount = _amount(null=True, blank=True)
    tax_inclusive = models.BooleanField(default=False)
    credit_grant = models.ForeignKey(
        "invoicing.CreditGrant", null=True, blank=True, on_delete=models.PROTECT, related_name="lines"
    )
    is_manual = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    position = models.PositiveIntegerField(default=Decimal(0))

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.description


class CreditNoteReason(models.TextChoices):
    DUPLICATE = "duplicate", "Duplicate charge"
    FRAUDULENT = "fraudulent", "Fraudulent"
    ORDER_CHANGE = "order_change", "Order change"
    PRODUCT_UNSATISFACTORY = "product_unsatisfactory", "Product unsatisfactory"
    BILLING_ERROR = "billing_error", "Billing error"


class CreditNote(models.Model):
    """A correction of an issued invoice: it reduces what is due, and beyond that records a refund
    owed to the customer. Numbered from its own gap-free sequence; never changed."""

    public_id = PublicIdField(prefix="cn")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=40)
    reason = models.CharField(max_length=30, choices=CreditNoteReason.choices)
    memo = models.TextField(blank=True)
    amount = _amount()
    amount_credited = _amount(help_text="The part that reduced what was due on the invoice.")
    credits_returned = _amount(
        default=Decimal(0),
        help_text="The part beyond what was due given back to the prepaid credits it used.",
    )
    refund_owed = _amount(help_text="The part beyond what was due: money owed back to the customer.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="credit_note_number_unique")
        ]

    def __str__(self) -> str:
        return self.number


class CreditNoteLine(models.Model):
    credit_note = models.ForeignKey(CreditNote, on_delete=models.PROTECT, related_name="lines")
    invoice_line = models.ForeignKey(
        InvoiceLine, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    description = models.CharField(max_length=300)
    amount = _amount()

    def __str__(self) -> str:
        return self.description


class NumberSequence(models.Model):
    """The last number handed out, per project and document kind. Taken under a row lock in the
    transaction that issues the document, so numbers are gap-free: a rollback gives it back."""

    class Kind(models.TextChoices):
        INVOICE = "invoice"
        CREDIT_NOTE = "credit_note"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    last_number = models.PositiveBigIntegerField(default=Decimal(0))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "kind"], name="number_sequence_unique")]

    def __str__(self) -> str:
        return f"{self.project} {self.kind}: {self.last_number}"


class PendingReviewInvoice(Invoice):
    """The review queue in the admin: invoices held for approval."""

    class Meta:
        proxy = True
        verbose_name = "invoice pending review"
        verbose_name_plural = "pending review"


def document_storage():
    """Where issued PDFs are kept: the `documents` storage (settings.STORAGES), local files unless
    BILLABLE_DOCUMENTS_STORAGE names a django-storages backend."""
    return storages["documents"]


class Document(models.Model):
    """The PDF of an issued invoice or of a credit note, rendered once and kept as the financial
    record it is: never re-rendered, never changed. `sha256` is the digest of the stored bytes."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    invoice = models.OneToOneField(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="document"
    )
    credit_note = models.OneToOneField(
        CreditNote, null=True, blank=True, on_delete=models.PROTECT, related_name="document"
    )
    file = models.FileField(storage=document_storage, upload_to="documents/%Y/%m/", max_length=300)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(invoice__isnull=False, credit_note__isnull=True)
                | Q(invoice__isnull=True, credit_note__isnull=False),
                name="document_of_one_record",
            )
        ]

    def __str__(self) -> str:
        return self.file.name


class EmailReason(models.TextChoices):
    ISSUED = "issued", "Issued"
    RESEND = "resend", "Sent again on request"


class EmailStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    RETRYING = "retrying", "Failed; will retry"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Not sent (no recipient)"


class InvoiceEmail(models.Model):
    """One sending of an invoice by email: the delivery log. The email of an issued invoice is
    created in the transaction that issues it, and only once (a unique constraint); another one
    exists only when someone asks for a resend."""

    public_id = PublicIdField(prefix="mail")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="emails")
    reason = models.CharField(max_length=10, choices=EmailReason.choices)
    status = models.CharField(max_length=10, choices=EmailStatus.choices, default=EmailStatus.QUEUED)
    from_email = models.CharField(max_length=300, blank=True)
    reply_to = models.JSONField(default=list, blank=True)
    to = models.JSONField(default=list, blank=True)
    cc = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    message_id = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Queued or retrying: when it is due. Sending: when a sender that claimed it is presumed dead.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "invoice email"
        constraints = [
            # Issuing emails an invoice once, however often the task runs.
            models.UniqueConstraint(
                fields=["invoice"], condition=Q(reason=EmailReason.ISSUED), name="invoice_email_once"
            )
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="invoice_email_due")]

    def __str__(self) -> str:
        return f"{self.invoice} → {', '.join(self.to) or 'nobody'} ({self.status})"


class Wallet(models.Model):
    """A customer's prepaid credits in one currency: the grants below, and the balance under which
    `credits.balance_low` is announced."""

    public_id = PublicIdField(prefix="wal")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="wallets")
    currency = models.CharField(max_length=3)
    low_balance_threshold = _amount(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["currency"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "currency"], name="wallet_one_per_currency")
        ]

    def __str__(self) -> str:
        return f"{self.customer} {self.currency}"


class CreditSource(models.TextChoices):
    GRANTED = "granted", "Granted (free)"
    PURCHASED = "purchased", "Purchased (invoiced)"


class CreditGrant(models.Model):
    """A block of prepaid credits. Applied to invoices after tax: lowest `priority` first, then the
    soonest to expire, then the oldest. A purchased grant is usable once its invoice is paid.
    Its balance is the sum of its ledger entries."""

    public_id = PublicIdField(prefix="cgr")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="grants")
    name = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=10, choices=CreditSource.choices, default=CreditSource.GRANTED)
    amount = _amount()
    priority = models.PositiveSmallIntegerField(default=50, help_text="0–100; lower is used first.")
    expires_at = models.DateTimeField(null=True, blank=True)
    invoice = models.OneToOneField(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="credit_grant_purchased"
    )
    available_at = models.DateTimeField(null=True, blank=True, help_text="Empty: a purchase not paid yet.")
    voided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "expires_at", "id"]

    def __str__(self) -> str:
        return self.name or self.public_id


class CreditEntryKind(models.TextChoices):
    GRANT = "grant", "Granted"
    APPLIED = "applied", "Applied to an invoice"
    RELEASED = "released", "Given back (invoice voided)"
    EXPIRED = "expired", "Expired"
    VOIDED = "voided", "Voided"


class CreditEntry(models.Model):
    """One movement of a grant's balance (signed: + grant and release, - application, expiry and
    void). Never edited; the unique constraints make each movement happen once."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=10, choices=CreditEntryKind.choices)
    amount = _amount()
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Credits given back by a credit note on an invoice they paid (RELEASED, once per note).
    credit_note = models.ForeignKey(
        "invoicing.CreditNote", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["grant", "kind", "invoice"],
                condition=Q(invoice__isnull=False, credit_note__isnull=True),
                name="credit_entry_once_per_invoice",
            ),
            models.UniqueConstraint(
                fields=["grant", "kind", "credit_note"],
                condition=Q(credit_note__isnull=False),
                name="credit_entry_once_per_credit_note",
            ),
            models.UniqueConstraint(
                fields=["grant", "kind"],
                condition=Q(invoice__isnull=True),
                name="credit_entry_once_per_grant",
            ),
        ]
        indexes = [models.Index(fields=["grant", "created_at"], name="credit_entry_grant")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount}"
