from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Outgoing events (the outbox and activity log) and their signed webhook deliveries."""

    name = "webhooks"
    verbose_name = "Events and webhooks"
    default_auto_field = "django.db.models.BigAutoField"
