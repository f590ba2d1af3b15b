from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    """Payment methods, payments, processors (Stripe, manual), balance and payouts."""

    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from payments.api.payment_methods import PaymentMethodSerializer
        from payments.models import PaymentMethod
        from webhooks import payloads

        payloads.register(PaymentMethod, lambda method: PaymentMethodSerializer(method).data)
