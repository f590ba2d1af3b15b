from django.apps import AppConfig


class BillingSiteConfig(AppConfig):
    """The shared bits every app uses: API conventions, IDs, money, the serve command."""

    name = "billing_site"
    verbose_name = "Platform"
    default_auto_field = "django.db.models.BigAutoField"
