from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Tenancy: projects, staff memberships and roles, API keys, the audit log."""

    name = "accounts"
    verbose_name = "Projects and access"
    default_auto_field = "django.db.models.BigAutoField"
