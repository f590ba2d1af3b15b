import hashlib

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from accounts.models import WRITE_ROLES, ApiKey, Membership, Project, Role


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_for_secret_hash(secret_hash: str) -> ApiKey | None:
    """The key whose secret has this SHA-256 (hash_secret), with its project, or None. Revoked and
    expired keys are returned too (authentication tells them apart by their status)."""
    return ApiKey.objects.select_related("project").filter(secret_hash=secret_hash).first()


def api_key_list(*, project: Project) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(project=project)


def user_roles(user: AbstractBaseUser) -> dict[int, str]:
    """Project id → role for a staff user; superusers are handled by the caller."""
    return dict(Membership.objects.filter(user=user).values_list("project_id", "role"))


def project_ids_for_user(user: AbstractBaseUser, *, write: bool = False) -> set[int]:
    roles = user_roles(user)
    if write:
        return {project_id for project_id, role in roles.items() if role in WRITE_ROLES}
    return set(roles)


def project_owners(*, project: Project) -> QuerySet:
    return Membership.objects.filter(project=project, role=Role.OWNER).select_related("user")
