import functools

from django.db.models import prefetch_related_objects
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing_site.api.fields import (
    MONEY_SCHEMA,
    DecimalStringField,
    MomentField,
    MoneyField,
    PublicIdRelatedField,
    RejectUnknownFieldsMixin,
)
from billing_site.money import to_minor_units
from catalog.models import Plan
from invoicing.models import (
    CreditNote,
    CreditNoteLine,
    CreditNoteReason,
    Invoice,
    InvoiceEmail,
    InvoiceLine,
)
from invoicing.selectors import invoice_lines_prefetch
from subscriptions.models import Subscription


class TierLineSerializer(serializers.Serializer):
    tier = serializers.IntegerField()
    units = DecimalStringField()
    unit_price = DecimalStringField()
    flat_fee = DecimalStringField()
    amount = DecimalStringField(help_text="Unrounded; the line's amount is rounded once.")


class InvoicePeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField(source="period_start")
    end = serializers.DateTimeField(source="period_end")


class InvoiceLineSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    plan = serializers.CharField(source="plan.public_id", default=None, allow_null=True)
    charge = serializers.CharField(source="charge.public_id", default=None, allow_null=True)
    meter = serializers.CharField(source="meter.code", default=None, allow_null=True)
    period = InvoicePeriodSerializer(source="*")
    quantity = DecimalStringField()
    unit_price = DecimalStringField()
    amount = MoneyField(currency="invoice.currency")
    discount_amount = MoneyField(
        currency="invoice.currency", help_text="Fee and usage lines: the discount taken off this line."
    )
    tax_amount = MoneyField(currency="invoice.currency", help_text="Fee and usage lines: this line's tax.")
    tiers = TierLineSerializer(many=True)
    original_invoice = serializers.CharField(
        source="original_invoice.public_id",
        default=None,
        allow_null=True,
        help_text="Late usage: the invoice of its period.",
    )

    class Meta:
        model = InvoiceLine
        fields = [
            "id",
            "type",
            "description",
            "plan",
            "charge",
            "meter",
            "period",
            "quantity",
            "unit_price",
            "amount",
            "discount_amount",
            "tax_amount",
            "taxes",
            "tiers",
            "original_invoice",
            "reason",
        ]
        read_only_fields = fields


class InvoiceEmailSerializer(serializers.ModelSerializer):
    """One sending of the invoice by email: the delivery log's row."""

    id = serializers.CharField(source="public_id")
    invoice = serializers.CharField(source="invoice.public_id")
    to = serializers.ListField(child=serializers.EmailField())
    cc = serializers.ListField(child=serializers.EmailField())

    class Meta:
        model = InvoiceEmail
        fields = [
            "id",
            "invoice",
            "reason",
            "status",
            "to",
            "cc",
            "subject",
            "message_id",
            "attempts",
            "next_attempt_at",
            "error",
            "created_at",
            "sent_at",
        ]
        read_only_fields = fields


class InvoiceCollectionSerializer(serializers.Serializer):
    attempt_count = serializers.IntegerField()
    status = serializers.CharField(
        help_text="Of the last charge: pending, processing, succeeded, failed, canceled."
    )
    next_payment_attempt = serializers.DateTimeField(allow_null=True)
    failure_code = serializers.CharField(allow_null=True)
    failure_message = serializers.CharField(allow_null=True)


class InvoiceSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    customer = serializers.CharField(source="customer.public_id")
    subscription = serializers.CharField(
        source="subscription.public_id",
        default=None,
        allow_null=True,
        help_text="Null for a purchase of prepaid credits (billing_reason credit_purchase).",
    )
    period = InvoicePeriodSerializer(source="*", help_text="The usage period the invoice closes.")
    subtotal = MoneyField(help_text="Fees and usage, before discounts and taxes.")
    discount = MoneyField(help_text="What coupons took off (the discount lines, as a positive amount).")
    tax = MoneyField(help_text="All tax: exclusive (added to the total) and inclusive (already in prices).")
    total = MoneyField(help_text="subtotal - discount + exclusive tax.")
    credits_applied = MoneyField(help_text="Prepaid credits the invoice took, after tax.")
    amount_due = MoneyField(help_text="total - credits_applied - credit notes - payments.")
    amount_paid = MoneyField()
    amount_credited = MoneyField()
    lines = InvoiceLineSerializer(many=True)
    pdf_url = serializers.SerializerMethodField(
        help_text="Where the invoice's PDF is (GET, application/pdf): the kept document once issued, "
        "a DRAFT-marked rendering before."
    )
    last_delivery = serializers.SerializerMethodField(help_text="The invoice's latest email, if any.")
    payment = serializers.SerializerMethodField(
        help_text="Collection through the processor: how many charges were tried, when the next one is "
        "due (dunning) and why the last one failed; null before any charge (docs/payments.md)."
    )

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "status",
            "customer",
            "subscription",
            "billing_reason",
            "currency",
            "period",
            "subtotal",
            "discount",
            "tax",
            "total",
            "credits_applied",
            "amount_due",
            "amount_paid",
            "amount_credited",
            "tax_note",
            "issued_at",
            "due_at",
            "reviewed_at",
            "voided_at",
            "void_reason",
            "created_at",
            "updated_at",
            "lines",
            "pdf_url",
            "last_delivery",
            "payment",
        ]
        read_only_fields = fields

    def get_pdf_url(self, invoice: Invoice) -> str:
        return f"/v1/invoices/{invoice.public_id}/pdf"

    @extend_schema_field(InvoiceCollectionSerializer(allow_null=True))
    def get_payment(self, invoice: Invoice) -> dict | None:
        # The charges of the invoice (payments' rows, reached by their reverse relation: invoicing
        # does not import payments), latest attempt last.
        attempts = [payment for payment in invoice.payments.all() if payment.attempt > 0]
        if not attempts:
            return None
        last = max(attempts, key=lambda payment: payment.attempt)
        return InvoiceCollectionSerializer(
            {
                "attempt_count": last.attempt,
                "status": last.status,
                "next_payment_attempt": last.next_retry_at,
                "failure_code": last.failure_code or None,
                "failure_message": last.failure_message or None,
            }
        ).data

    @extend_schema_field(InvoiceEmailSerializer(allow_null=True))
    def get_last_delivery(self, invoice: Invoice) -> dict | None:
        email = next(iter(invoice.emails.all()), None)
        return None if email is None else InvoiceEmailSerializer(email).data


def invoice_payload(invoice: Invoice) -> dict:
    """An invoice as the API shows it, for an event's data: the lines and what they name in one
    query. The prefetch made here is dropped afterwards, so later `invoice.lines.all()` calls in
    the same transaction read the lines as they are then."""
    fetched = "lines" not in getattr(invoice, "_prefetched_objects_cache", {})
    if fetched:
        prefetch_related_objects([invoice], invoice_lines_prefetch())
    try:
        return InvoiceSerializer(invoice).data
    finally:
        if fetched:
            invoice._prefetched_objects_cache.pop("lines")


# What issuing sets on an invoice (invoicing.services.invoice_issue_composed); its lines, totals
# and relations stay as composed.
ISSUE_FIELDS = ("number", "status", "amount_due", "issued_at", "due_at", "updated_at")


@functools.cache
def _issue_fields() -> list[serializers.Field]:
    fields = InvoiceSerializer().fields
    return [fields[name] for name in ISSUE_FIELDS]


def invoice_payload_issued(invoice: Invoice, composed: dict) -> dict:
    """invoice_payload of an invoice just issued, from `composed`, its payload built when it was
    composed in the same transaction: the fields issuing sets are rendered again, as the
    serializer renders them, and the rest (its lines above all) kept."""
    data = dict(composed)
    for field in _issue_fields():
        value = field.get_attribute(invoice)
        data[field.field_name] = None if value is None else field.to_representation(value)
    return data


class ReasonSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


# Amounts in minor units the API takes: below 10^15 (ten trillion dollars, a quadrillion yen).
MAX_MINOR_UNITS = 10**15 - 1


class AdjustmentSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    amount = serializers.IntegerField(
        min_value=-MAX_MINOR_UNITS,
        max_value=MAX_MINOR_UNITS,
        help_text="Minor units; negative for a credit; not 0 (422).",
    )
    description = serializers.CharField(max_length=300, help_text="As the customer reads it.")
    reason = serializers.CharField(max_length=2000, help_text="Why; kept in the audit trail.")


class CreditNoteLineInputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    line = serializers.CharField(max_length=40, help_text="An invoice line ID (il_…).")
    amount = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_MINOR_UNITS,
        help_text="Minor units; default the whole line.",
    )


class CreditNoteCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = serializers.ChoiceField(choices=CreditNoteReason.choices)
    memo = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    lines = CreditNoteLineInputSerializer(many=True, required=False, help_text="Credit these lines.")
    amount = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_MINOR_UNITS,
        help_text="Minor units, not tied to a line. Omit both to credit the whole invoice.",
    )


class CreditNoteLineSerializer(serializers.ModelSerializer):
    line = serializers.CharField(source="invoice_line.public_id", default=None, allow_null=True)
    amount = MoneyField(currency="credit_note.invoice.currency")

    class Meta:
        model = CreditNoteLine
        fields = ["line", "description", "amount"]
        read_only_fields = fields


class CreditNoteSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    invoice = serializers.CharField(source="invoice.public_id")
    amount = MoneyField(currency="invoice.currency")
    amount_credited = MoneyField(currency="invoice.currency")
    credits_returned = MoneyField(
        currency="invoice.currency",
        help_text="Beyond what was due: given back to the prepaid credits that paid the invoice.",
    )
    refund_owed = MoneyField(currency="invoice.currency")
    lines = CreditNoteLineSerializer(many=True)
    pdf_url = serializers.SerializerMethodField(help_text="Where the credit note's PDF is (GET).")

    class Meta:
        model = CreditNote
        fields = [
            "id",
            "number",
            "invoice",
            "reason",
            "memo",
            "amount",
            "amount_credited",
            "credits_returned",
            "refund_owed",
            "lines",
            "pdf_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_pdf_url(self, note: CreditNote) -> str:
        return f"/v1/credit-notes/{note.public_id}/pdf"


class PreviewRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    subscription = PublicIdRelatedField(model=Subscription)
    plan = PublicIdRelatedField(
        model=Plan, required=False, help_text="Price the period as if the subscription had been on this plan."
    )
    period_start = MomentField(
        required=False, help_text="Any moment in the period to price (default: the current period)."
    )


class PreviewLineSerializer(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField()
    plan = serializers.CharField(source="plan.public_id", default=None, allow_null=True)
    charge = serializers.CharField(source="charge.public_id", default=None, allow_null=True)
    period = InvoicePeriodSerializer(source="*")
    quantity = DecimalStringField()
    unit_price = DecimalStringField()
    amount = serializers.SerializerMethodField()
    discount_amount = serializers.SerializerMethodField(help_text="Fee and usage lines: the discount on it.")
    tax_amount = serializers.SerializerMethodField(help_text="Fee and usage lines: its tax.")
    tiers = TierLineSerializer(many=True)

    @extend_schema_field(MONEY_SCHEMA)
    def get_amount(self, line) -> dict:
        return self._money(line.amount)

    @extend_schema_field(MONEY_SCHEMA)
    def get_discount_amount(self, line) -> dict:
        return self._money(line.discount_amount)

    @extend_schema_field(MONEY_SCHEMA)
    def get_tax_amount(self, line) -> dict:
        return self._money(line.tax_amount)

    def _money(self, amount) -> dict:
        return {
            "amount": to_minor_units(amount, self.context["currency"]),
            "currency": self.context["currency"],
        }


class InvoicePreviewSerializer(serializers.Serializer):
    subscription = serializers.CharField(source="subscription.public_id")
    currency = serializers.CharField()
    period = InvoicePeriodSerializer(source="*")
    subtotal = MoneyField(help_text="Fees and usage, before discounts and taxes.")
    discount = MoneyField(help_text="What coupons would take off.")
    tax = MoneyField(help_text="All tax, exclusive and inclusive.")
    total = MoneyField(help_text="subtotal - discount + exclusive tax.")
    credits_applied = MoneyField(help_text="Prepaid credits it would take now.")
    amount_due = MoneyField(help_text="total - credits_applied.")
    lines = serializers.SerializerMethodField()

    @extend_schema_field(PreviewLineSerializer(many=True))
    def get_lines(self, invoice) -> list:
        return PreviewLineSerializer(
            invoice.preview_lines, many=True, context={"currency": invoice.currency}
        ).data
