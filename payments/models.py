"""Payment methods, payments, refunds, the balance ledger, payouts and incoming processor events.

Money here is what was collected, so the rows are records: nothing is deleted (PROTECT), and the
ledger (`BalanceEntry`) is append-only — a movement is corrected by another movement. Every write
that must happen once is a unique constraint: a processor reference, a processor event id, a
collection attempt per invoice, one attempt in flight per invoice, one ledger entry per movement.
"""

from django.db import models
from django.db.models import Q

from accounts.models import PaymentProcessor, Project
from billing_site.ids import PublicIdField
from catalog.models import Customer
from invoicing.models import AMOUNT_DIGITS, AMOUNT_PLACES, CreditNote, Invoice


def _amount(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, **kwargs)


class PaymentMethod(models.Model):
    """A customer's saved instrument at the processor (Stripe's `pm_…`), as the processor
    described it. Removing one detaches it at the processor and keeps the row (payments point at
    it); at most one attached method per customer is the default."""

    public_id = PublicIdField(prefix="pmt")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="payment_methods")
    processor_id = models.CharField(max_length=255, help_text="The processor's ID, e.g. pm_…")
    type = models.CharField(max_length=40, help_text="card, sepa_debit, …")
    brand = models.CharField(max_length=40, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    iban_last4 = models.CharField(max_length=4, blank=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    detached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-is_default", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "processor_id"], name="payment_method_unique"),
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(is_default=True, detached_at__isnull=True),
                name="payment_method_one_default",
            ),
        ]

    def __str__(self) -> str:
        if self.type == "card":
            return f"{self.brand or 'card'} •••• {self.last4}"
        if self.iban_last4:
            return f"{self.type} •••• {self.iban_last4}"
        return self.type


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending (being charged)"
    PROCESSING = "processing", "Processing (the processor answers later)"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Not charged (nothing was due any more)"


IN_FLIGHT_STATUSES = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)


class Payment(models.Model):
    """Money received against an invoice: a charge through the processor (one row per attempt;
    `attempt` counts them per invoice) or a payment recorded for the project's own processor.

    `invoice` is empty for a payment the processor reported that matches no invoice: it is kept,
    and shown in the admin's reconciliation queue until someone matches it.
    """

    public_id = PublicIdField(prefix="pay")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    processor = models.CharField(max_length=10, choices=PaymentProcessor.choices)
    processor_reference = models.CharField(
        max_length=255, blank=True, help_text="The processor's ID (pi_… for Stripe) or your own reference."
    )
    charge_reference = models.CharField(max_length=255, blank=True, help_text="Stripe's charge (ch_…).")
    payment_method = models.ForeignKey(
        PaymentMethod, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    method = models.CharField(max_length=40, blank=True, help_text="card, sepa_debit, bank_transfer, …")
    currency = models.CharField(max_length=3)
    amount = _amount()
    fee = _amount(default=0)
    net = _amount(default=0)
    amount_refunded = _amount(default=0)
    status = models.CharField(max_length=10, choices=PaymentStatus.choices, default=PaymentStatus.PENDING)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_message = models.TextField(blank=True)
    attempt = models.PositiveIntegerField(default=1, help_text="Which collection attempt of the invoice.")
    next_retry_at = models.DateTimeField(
        null=True, blank=True, help_text="A failed charge: when dunning tries again (empty: it does not)."
    )
    paid_at = models.DateTimeField(null=True, blank=True)
    available_at = models.DateTimeField(
        null=True, blank=True, help_text="When the money moves from pending to available in the balance."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "processor", "processor_reference"],
                condition=~Q(processor_reference=""),
                name="payment_processor_reference_unique",
            ),
            # A charge attempt is made once, however often the task or the dunning run repeats.
            models.UniqueConstraint(
                fields=["invoice", "attempt"],
                condition=Q(processor=PaymentProcessor.STRIPE),
                name="payment_attempt_once",
            ),
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(status__in=IN_FLIGHT_STATUSES),
                name="payment_one_in_flight",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "status", "next_retry_at"], name="payment_retry_due"),
            models.Index(fields=["project", "invoice"], name="payment_project_invoice"),
        ]

    def __str__(self) -> str:
        return self.public_id


class RefundStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Refund(models.Model):
    """Money given back from a payment: for a credit note's refund owed, or reported by the
    processor (a refund made in Stripe's dashboard)."""

    public_id = PublicIdField(prefix="rfd")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    credit_note = models.ForeignKey(
        CreditNote, null=True, blank=True, on_delete=models.PROTECT, related_name="refunds"
    )
    processor = models.CharField(max_length=10, choices=PaymentProcessor.choices)
    processor_reference = models.CharField(max_length=255, blank=True)
    currency = models.CharField(max_length=3)
    amount = _amount()
    status = models.CharField(max_length=10, choices=RefundStatus.choices, default=RefundStatus.PENDING)
    failure_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "processor", "processor_reference"],
                condition=~Q(processor_reference=""),
                name="refund_processor_reference_unique",
            ),
            # A credit note refunds a payment once.
            models.UniqueConstraint(
                fields=["credit_note", "payment"],
                condition=Q(credit_note__isnull=False),
                name="refund_once_per_credit_note",
            ),
        ]

    def __str__(self) -> str:
        return self.public_id


class PayoutStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_TRANSIT = "in_transit", "In transit"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


class Payout(models.Model):
    """Available balance sent to the project's bank account."""

    public_id = PublicIdField(prefix="po")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    processor = models.CharField(max_length=10, choices=PaymentProcessor.choices)
    processor_reference = models.CharField(max_length=255, blank=True)
    currency = models.CharField(max_length=3)
    amount = _amount()
    status = models.CharField(max_length=10, choices=PayoutStatus.choices, default=PayoutStatus.PENDING)
    arrival_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "processor", "processor_reference"],
                condition=~Q(processor_reference=""),
                name="payout_processor_reference_unique",
            )
        ]

    def __str__(self) -> str:
        return self.public_id


class EntryKind(models.TextChoices):
    PAYMENT = "payment", "Payment"
    FEE = "fee", "Processor fee"
    REFUND = "refund", "Refund"
    DISPUTE = "dispute", "Dispute"
    DISPUTE_REVERSAL = "dispute_reversal", "Dispute won"
    PAYOUT = "payout", "Payout"
    PAYOUT_FAILURE = "payout_failure", "Payout returned"


class BalanceEntry(models.Model):
    """One money movement in the project's balance, signed (in positive, out negative), never edited.

    The movement counts as `pending` until `available_at`, then as `available`; a payout takes
    available money out. `reference` names what moved (a payment, refund, dispute or payout ID)
    and is unique per kind, so a movement reported twice is entered once.
    """

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    reference = models.CharField(max_length=255)
    currency = models.CharField(max_length=3)
    amount = _amount()
    available_at = models.DateTimeField()
    description = models.CharField(max_length=300, blank=True)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="balance_entries"
    )
    refund = models.ForeignKey(
        Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="balance_entries"
    )
    payout = models.ForeignKey(
        Payout, null=True, blank=True, on_delete=models.PROTECT, related_name="balance_entries"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "balance entry"
        verbose_name_plural = "balance ledger"
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "reference"], name="balance_entry_once")
        ]
        indexes = [models.Index(fields=["project", "currency", "available_at"], name="balance_entry_due")]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference}"


class ProcessorEvent(models.Model):
    """An event the processor sent us (a Stripe webhook), stored by its ID before it is handled,
    so a repeat is recognised and does nothing. `processed_at` is set in the transaction that
    handled it; an event whose handling failed keeps the error and is handled again on a repeat."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    processor = models.CharField(max_length=10, choices=PaymentProcessor.choices)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "processor", "event_id"], name="processor_event_once")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class UnmatchedPayment(Payment):
    """The reconciliation queue in the admin: payments the processor reported that match no
    invoice."""

    class Meta:
        proxy = True
        verbose_name = "unmatched payment"
        verbose_name_plural = "unmatched payments"
