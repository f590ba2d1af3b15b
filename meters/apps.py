from django.apps import AppConfig


class MetersConfig(AppConfig):
    """Meters, usage events, ingestion and aggregation."""

    name = "meters"
    default_auto_field = "django.db.models.BigAutoField"
