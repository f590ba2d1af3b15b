import re
import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone

from accounts.models import ALL_SCOPES, ApiKey, AuditLogEntry, Membership, Project, Role
from accounts.selectors import hash_secret
from billing_site.errors import InvalidInput, Unprocessable
from billing_site.validators import check, validate_currency, validate_timezone

Actor = AbstractBaseUser | ApiKey | None

# last_used_at is a hint for humans; writing it on every request would make every API call a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def audit_record(
    *,
    project: Project | None,
    actor: Actor,
    action: str,
    target: models.Model | None = None,
    changes: dict | None = None,
) -> AuditLogEntry:
    """Record who did what. Call it inside the transaction of the change it describes."""
    entry = AuditLogEntry(project=project, action=action, changes=changes or {})
    if isinstance(actor, ApiKey):
        entry.actor_api_key = actor
        entry.actor_label = f"API key {actor.prefix}… ({actor.name})"
    elif actor is not None:
        entry.actor_user = actor
        entry.actor_label = actor.get_username()
    else:
        entry.actor_label = "system"
    if target is not None:
        entry.object_type = target._meta.model_name
        entry.object_id = str(getattr(target, "public_id", target.pk))
        entry.object_repr = str(target)[:200]
    entry.save()
    return entry


def _default_invoice_prefix(name: str) -> str:
    letters = re.sub(r"[^A-Z0-9]", "", name.upper())[:8]
    return letters or "INV"


def project_create(
    *, name: str, currency: str = "USD", timezone_name: str = "UTC", actor: Actor = None
) -> Project:
    """Create a tenant. The invoice number prefix defaults to the name's capitals (ACME-000001)."""
    name = name.strip()
    if not name:
        raise InvalidInput("A project needs a name.", code="required", param="name")
    check(validate_currency, currency, param="currency")
    check(validate_timezone, timezone_name, param="timezone")
    with transaction.atomic():
        project = Project.objects.create(
            name=name,
            currency=currency,
            timezone=timezone_name,
            invoice_number_prefix=_default_invoice_prefix(name),
        )
        audit_record(project=project, actor=actor, action="project.created", target=project)
    return project


def project_bootstrap(
    *, name: str, currency: str = "USD", timezone_name: str = "UTC", actor: Actor = None
) -> tuple[Project, ApiKey, str]:
    """A new project with an all-scopes API key, in one transaction (ops bootstrap, scripts)."""
    with transaction.atomic():
        project = project_create(name=name, currency=currency, timezone_name=timezone_name, actor=actor)
        api_key, secret = api_key_create(
            project=project, name="Bootstrap key", scopes=ALL_SCOPES, actor=actor
        )
    return project, api_key, secret


def membership_set(*, project: Project, user: AbstractBaseUser, role: Role, actor: Actor) -> Membership:
    """Give a user a role in a project (creating or changing the membership); makes them staff."""
    with transaction.atomic():
        membership, created = Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": role}
        )
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        audit_record(
            project=project,
            actor=actor,
            action="membership.created" if created else "membership.changed",
            target=membership,
            changes={"user": user.get_username(), "role": role},
        )
    return membership


def _api_key_event(api_key: ApiKey, event_type: str, **extra: Any) -> None:
    """Record an `api_key.*` event: the key as the API shows it (never its secret or hash)."""
    from webhooks.payloads import payload_for  # deferred: webhooks.services imports this module
    from webhooks.services import event_record

    event_record(project=api_key.project, type=event_type, obj=api_key, data=payload_for(api_key) | extra)


def api_key_create(*, project: Project, name: str, scopes: list[str], actor: Actor) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is not stored and cannot be shown again.

    A key can only create keys with scopes it holds itself, so a read-only key cannot mint a
    write key.
    """
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise InvalidInput(f"Unknown scope(s): {', '.join(unknown)}.", code="invalid_scope", param="scopes")
    if not scopes:
        raise InvalidInput("A key needs at least one scope.", code="invalid_scope", param="scopes")
    if isinstance(actor, ApiKey) and not set(scopes) <= set(actor.scopes):
        raise Unprocessable(
            "A key can only grant scopes it holds itself.", code="scope_not_held", param="scopes"
        )
    secret = "bk_" + secrets.token_urlsafe(32)
    with transaction.atomic():
        key = ApiKey.objects.create(
            project=project,
            name=name.strip() or "API key",
            prefix=secret[:11],
            secret_hash=hash_secret(secret),
            scopes=[scope for scope in ALL_SCOPES if scope in scopes],
            created_by=None if isinstance(actor, ApiKey) or actor is None else actor,
        )
        audit_record(
            project=project, actor=actor, action="api_key.created", target=key, changes={"scopes": key.scopes}
        )
        _api_key_event(key, "api_key.created")
    return key, secret


def api_key_revoke(*, api_key: ApiKey, actor: Actor) -> ApiKey:
    """Revoke a key; revoking an already revoked key changes nothing."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        api_key.refresh_from_db(fields=["revoked_at"])
        if revoked:
            audit_record(project=api_key.project, actor=actor, action="api_key.revoked", target=api_key)
            _api_key_event(api_key, "api_key.revoked")
    return api_key


def api_key_touch(*, api_key: ApiKey) -> None:
    """Note that the key was used, at most once a minute per key."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
