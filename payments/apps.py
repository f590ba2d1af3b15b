from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    """Payment methods, payments, processors (Stripe, manual), balance and payouts."""

    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"
