import re
import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from accounts.models import ALL_SCOPES, ApiKey, AuditLogEntry, Membership, Project, Role
from accounts.selectors import hash_secret
from billing_site.errors import InvalidInput, InvalidState, Unprocessable
from billing_site.ratelimit import project_version_bump
from billing_site.validators import check, validate_currency, validate_timezone

Actor = AbstractBaseUser | ApiKey | None

# last_used_at is a hint for humans; writing it on every request would make every API call a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# How long a rolled key may keep working beside its replacement (Stripe allows up to 7 days too).
MAX_ROLL_EXPIRY = timedelta(days=7)
# Project fields whose values the audit trail records as changed but never shows; events and
# responses never carry their values at all.
PROJECT_SECRET_FIELDS = frozenset({"stripe_secret_key", "stripe_webhook_secret"})
MASKED_VALUE = "••••••"


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
    *,
    name: str,
    currency: str = "USD",
    timezone_name: str = "UTC",
    sandbox: bool = False,
    actor: Actor = None,
) -> Project:
    """Create a tenant. The invoice number prefix defaults to the name's capitals (ACME-000001).
    A sandbox project may close billing periods ahead of the clock (a rehearsal)."""
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
            sandbox=sandbox,
            invoice_number_prefix=_default_invoice_prefix(name),
        )
        audit_record(project=project, actor=actor, action="project.created", target=project)
    return project


def project_update(*, project: Project, changes: dict[str, Any], actor: Actor) -> Project:
    """Change project settings (fields of Project; the API offers a subset, the admin all). Only
    values that differ from the stored ones are checked and written; a change to nothing records
    nothing.

    Changing the currency or time zone changes the defaults of customers and plans created
    afterwards: customers, plans, subscriptions and invoices carry their own, so nothing already
    billed or scheduled moves. Audited with old and new values (secrets masked); the
    `project.updated` event names the changed fields.
    """
    from webhooks.payloads import payload_for  # deferred: webhooks.services imports this module
    from webhooks.services import event_record

    with transaction.atomic():
        current = Project.objects.select_for_update().get(pk=project.pk)
        changed = {name: value for name, value in changes.items() if getattr(current, name) != value}
        if not changed:
            return current
        audit = {
            name: [MASKED_VALUE, MASKED_VALUE]
            if name in PROJECT_SECRET_FIELDS
            else [str(getattr(current, name)), str(value)]
            for name, value in changed.items()
        }
        for name, value in changed.items():
            setattr(current, name, value)
        unchanged = [field.name for field in Project._meta.concrete_fields if field.name not in changed]
        try:
            current.full_clean(exclude=unchanged, validate_unique=False, validate_constraints=False)
        except ValidationError as error:
            name, problems = next(iter(error.error_dict.items()))
            raise InvalidInput(
                problems[0].messages[0], code=problems[0].code or "invalid", param=name
            ) from None
        current.save(update_fields=list(changed))
        audit_record(project=current, actor=actor, action="project.updated", target=current, changes=audit)
        event_record(
            project=current,
            type="project.updated",
            obj=current,
            data=payload_for(current) | {"changed_fields": sorted(changed)},
        )
    return current


def project_bootstrap(
    *,
    name: str,
    currency: str = "USD",
    timezone_name: str = "UTC",
    sandbox: bool = False,
    actor: Actor = None,
) -> tuple[Project, ApiKey, str]:
    """A new project with an all-scopes API key, in one transaction (ops bootstrap, scripts)."""
    with transaction.atomic():
        project = project_create(
            name=name, currency=currency, timezone_name=timezone_name, sandbox=sandbox, actor=actor
        )
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


def _scopes_held_check(*, scopes: list[str], actor: Actor, message: str, param: str | None) -> None:
    """A key can only hand out scopes it holds itself, so a read-only key cannot mint a write key."""
    if isinstance(actor, ApiKey) and not set(scopes) <= set(actor.scopes):
        raise Unprocessable(message, code="scope_not_held", param=param)


def _api_key_event(api_key: ApiKey, event_type: str, **extra: Any) -> None:
    """Record an `api_key.*` event: the key as the API shows it (never its secret or hash)."""
    from webhooks.payloads import payload_for  # deferred: webhooks.services imports this module
    from webhooks.services import event_record

    event_record(project=api_key.project, type=event_type, obj=api_key, data=payload_for(api_key) | extra)


def _api_key_insert(*, project: Project, name: str, scopes: list[str], actor: Actor) -> tuple[ApiKey, str]:
    """Store a new key (its hash) and record it; call inside a transaction."""
    secret = "bk_" + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        project=project,
        name=name,
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


def api_key_create(*, project: Project, name: str, scopes: list[str], actor: Actor) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is not stored and cannot be shown again.

    A key can only create keys with scopes it holds itself.
    """
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise InvalidInput(f"Unknown scope(s): {', '.join(unknown)}.", code="invalid_scope", param="scopes")
    if not scopes:
        raise InvalidInput("A key needs at least one scope.", code="invalid_scope", param="scopes")
    _scopes_held_check(
        scopes=scopes, actor=actor, message="A key can only grant scopes it holds itself.", param="scopes"
    )
    with transaction.atomic():
        return _api_key_insert(project=project, name=name.strip() or "API key", scopes=scopes, actor=actor)


def api_key_roll(
    *, api_key: ApiKey, expires_in: timedelta = timedelta(0), actor: Actor
) -> tuple[ApiKey, str]:
    """Replace a key with a new one of the same name and scopes, returned with its secret (shown
    once, as at creation). The old key keeps working for `expires_in` (0 to MAX_ROLL_EXPIRY; 0
    ends it now), then authentication refuses it as expired.

    Only an active key can be rolled, and only once: a revoked, expired or already rolled key is
    InvalidState. A key can only roll keys whose scopes it holds itself.
    """
    if not timedelta(0) <= expires_in <= MAX_ROLL_EXPIRY:
        raise InvalidInput(
            f"expires_in must be 0 to {int(MAX_ROLL_EXPIRY.total_seconds())} seconds.",
            code="max_value" if expires_in > MAX_ROLL_EXPIRY else "min_value",
            param="expires_in",
        )
    _scopes_held_check(
        scopes=api_key.scopes,
        actor=actor,
        message="A key can only roll keys whose scopes it holds itself.",
        param=None,
    )
    with transaction.atomic():
        # Compare-and-swap: of two concurrent rolls of one key, one sets expires_at and the other
        # finds the key already rolled, so a key never gets two replacements.
        expires_at = timezone.now() + expires_in
        rolled = ApiKey.objects.filter(
            pk=api_key.pk, revoked_at__isnull=True, expires_at__isnull=True
        ).update(expires_at=expires_at)
        if not rolled:
            api_key.refresh_from_db(fields=["revoked_at", "expires_at"])
            raise InvalidState(
                f"Only an active key can be rolled; this one is {api_key.status}.",
                current=api_key.status,
                requested="roll",
                code="api_key_not_active",
            )
        project_version_bump(project_id=api_key.project_id)  # a queryset update sends no post_save
        api_key.expires_at = expires_at
        new_key, secret = _api_key_insert(
            project=api_key.project, name=api_key.name, scopes=api_key.scopes, actor=actor
        )
        audit_record(
            project=api_key.project,
            actor=actor,
            action="api_key.rolled",
            target=api_key,
            changes={"replaced_by": new_key.public_id, "expires_at": expires_at.isoformat()},
        )
        _api_key_event(api_key, "api_key.rolled", replaced_by=new_key.public_id)
    return new_key, secret


def api_key_revoke(*, api_key: ApiKey, actor: Actor) -> ApiKey:
    """Revoke a key; revoking an already revoked key changes nothing."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        api_key.refresh_from_db(fields=["revoked_at"])
        if revoked:
            project_version_bump(project_id=api_key.project_id)  # a queryset update sends no post_save
            audit_record(project=api_key.project, actor=actor, action="api_key.revoked", target=api_key)
            _api_key_event(api_key, "api_key.revoked")
    return api_key


def api_key_touch(*, api_key: ApiKey) -> None:
    """Note that the key was used, at most once a minute per key."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
