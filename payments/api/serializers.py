from rest_framework import serializers

from billing_site.api.fields import MomentField, MoneyField, RejectUnknownFieldsMixin
from invoicing.api.serializers import MAX_MINOR_UNITS
from payments.models import Payment, Payout, Refund
from payments.services import MANUAL_METHODS


class PaymentSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    invoice = serializers.CharField(
        source="invoice.public_id", default=None, allow_null=True, help_text="Null: matches no invoice yet."
    )
    customer = serializers.CharField(source="customer.public_id", default=None, allow_null=True)
    payment_method = serializers.CharField(source="payment_method.public_id", default=None, allow_null=True)
    amount = MoneyField()
    fee = MoneyField()
    net = MoneyField()
    amount_refunded = MoneyField()

    class Meta:
        model = Payment
        fields = [
            "id",
            "invoice",
            "customer",
            "processor",
            "processor_reference",
            "payment_method",
            "method",
            "status",
            "amount",
            "fee",
            "net",
            "amount_refunded",
            "failure_code",
            "failure_message",
            "attempt",
            "next_retry_at",
            "paid_at",
            "available_at",
            "created_at",
        ]
        read_only_fields = fields


class RefundSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    payment = serializers.CharField(source="payment.public_id")
    credit_note = serializers.CharField(source="credit_note.public_id", default=None, allow_null=True)
    amount = MoneyField()

    class Meta:
        model = Refund
        fields = [
            "id",
            "payment",
            "credit_note",
            "processor",
            "processor_reference",
            "status",
            "amount",
            "created_at",
        ]
        read_only_fields = fields


class PayoutSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    amount = MoneyField()

    class Meta:
        model = Payout
        fields = [
            "id",
            "processor",
            "processor_reference",
            "status",
            "amount",
            "arrival_at",
            "paid_at",
            "failure_code",
            "failure_message",
            "created_at",
        ]
        read_only_fields = fields


class PaymentRecordSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    amount = serializers.IntegerField(
        min_value=1,
        max_value=MAX_MINOR_UNITS,
        help_text="Minor units, at most what is due (else 422 overpayment).",
    )
    reference = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="Your processor's or bank's reference; unique per project (else 409 duplicate_reference).",
    )
    paid_at = MomentField(required=False, help_text="When it was paid; default now; not in the future.")
    method = serializers.ChoiceField(choices=MANUAL_METHODS, default="bank_transfer")


class CreditNoteRefundSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reference = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="For payments recorded for your own processor: the refund's reference there.",
    )


class BalanceAmountsSerializer(serializers.Serializer):
    currency = serializers.CharField()
    available = serializers.IntegerField(help_text="Minor units, ready for payout.")
    pending = serializers.IntegerField(help_text="Minor units, not yet available.")


class BalanceSerializer(serializers.Serializer):
    currency = serializers.CharField(help_text="The project's currency; `available` and `pending` are in it.")
    available = serializers.IntegerField(help_text="Minor units ready for payout (JEB's `available`).")
    pending = serializers.IntegerField(help_text="Minor units paid but not yet available.")
    payout = serializers.CharField(help_text='The payout delay, e.g. "48h".')
    balances = BalanceAmountsSerializer(many=True, help_text="Every currency with money in the ledger.")
