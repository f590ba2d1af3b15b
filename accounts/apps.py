from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Tenancy: projects, staff memberships and roles, API keys, the audit log."""

    name = "accounts"
    verbose_name = "Projects and access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts import signals  # noqa: F401 - connects the receivers
        from accounts.api.serializers import ApiKeySerializer, ProjectSerializer
        from accounts.models import ApiKey, Project
        from webhooks import payloads

        payloads.register(ApiKey, lambda api_key: ApiKeySerializer(api_key).data)
        payloads.register(Project, lambda project: ProjectSerializer(project).data)
