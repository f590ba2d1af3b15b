from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    """Subscriptions and their lifecycle: periods, pauses, plan changes."""

    name = "subscriptions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from subscriptions.api.serializers import SubscriptionSerializer
        from subscriptions.models import Subscription
        from webhooks import payloads

        payloads.register(Subscription, lambda subscription: SubscriptionSerializer(subscription).data)
