from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    """Payment methods, payments, processors (Stripe, manual), balance and payouts."""

    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from invoicing.signals import invoice_issued
        from payments.api.payment_methods import PaymentMethodSerializer
        from payments.api.serializers import PaymentSerializer, PayoutSerializer, RefundSerializer
        from payments.collection import collection_queue
        from payments.models import Payment, PaymentMethod, Payout, Refund
        from webhooks import payloads

        payloads.register(PaymentMethod, lambda method: PaymentMethodSerializer(method).data)
        payloads.register(Payment, lambda payment: PaymentSerializer(payment).data)
        payloads.register(Refund, lambda refund: RefundSerializer(refund).data)
        payloads.register(Payout, lambda payout: PayoutSerializer(payout).data)
        invoice_issued.connect(collection_queue, dispatch_uid="payments.collection_queue")
