"""Every saved or deleted project or API key invalidates the processes' cached API keys of its
project (billing_site.api.authentication). Queryset updates send no signals: the services that
use them (api_key_roll, api_key_revoke) bump the version themselves."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import ApiKey, Project
from billing_site.ratelimit import project_version_bump


@receiver([post_save, post_delete], sender=Project, dispatch_uid="accounts.project_version_bump")
def _project_changed(sender, instance: Project, **kwargs) -> None:
    project_version_bump(project_id=instance.pk)


@receiver([post_save, post_delete], sender=ApiKey, dispatch_uid="accounts.api_key_version_bump")
def _api_key_changed(sender, instance: ApiKey, **kwargs) -> None:
    project_version_bump(project_id=instance.project_id)
