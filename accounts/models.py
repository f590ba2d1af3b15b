from itertools import pairwise

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from billing_site.ids import PublicIdField
from billing_site.validators import (
    PatternValidator,
    validate_currency,
    validate_locale,
    validate_timezone,
)


class Scope(models.TextChoices):
    USAGE_WRITE = "usage:write", "Report usage"
    BILLING_READ = "billing:read", "Read billing data"
    BILLING_UPDATE = "billing:update", "Change billing data"


ALL_SCOPES = [scope.value for scope in Scope]


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    BILLING_ADMIN = "billing_admin", "Billing admin"
    VIEWER = "viewer", "Viewer"


# Roles that may change billing data (approve, void, edit drafts); owners also manage the project.
WRITE_ROLES = frozenset({Role.OWNER, Role.BILLING_ADMIN})


class InvoiceDelivery(models.TextChoices):
    AUTO = "auto", "Send automatically"
    REVIEW = "review", "Hold for review"


class PaymentProcessor(models.TextChoices):
    STRIPE = "stripe", "Stripe"
    MANUAL = "manual", "Manual (own processor)"


class DunningFinalAction(models.TextChoices):
    LEAVE_OPEN = "leave_open", "Leave the invoice open"
    MARK_UNCOLLECTIBLE = "mark_uncollectible", "Mark the invoice uncollectible"


DEFAULT_PAYMENT_RETRY_DAYS = [1, 3, 5, 7]


def default_payment_retry_days() -> list[int]:
    return list(DEFAULT_PAYMENT_RETRY_DAYS)


def validate_retry_days(value) -> None:
    """Days after the first failed charge, each later than the one before, at most 10 retries."""
    if (
        not isinstance(value, list)
        or len(value) > 10
        or not all(isinstance(day, int) and not isinstance(day, bool) and 1 <= day <= 90 for day in value)
        or any(later <= earlier for earlier, later in pairwise(value))
    ):
        raise ValidationError(
            "Up to 10 whole numbers of days between 1 and 90, each larger than the one before, "
            "e.g. [1, 3, 5, 7].",
            code="invalid_retry_days",
        )


class UnmatchedUsage(models.TextChoices):
    KEEP = "keep", "Keep and report as unmatched"
    REJECT = "reject", "Reject the event"


class ApiKeyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    EXPIRING = "expiring", "Expiring (rolled; works until expires_at)"
    EXPIRED = "expired", "Expired (rolled)"
    REVOKED = "revoked", "Revoked"


MAX_PAYMENT_TERMS_DAYS = 365


class Project(models.Model):
    """The tenant. Every other row belongs to exactly one project; no query crosses projects."""

    public_id = PublicIdField(prefix="proj")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    sandbox = models.BooleanField(
        default=False,
        help_text="A test project: billing periods may be closed ahead of the clock (close --as-of a "
        "future moment), as a rehearsal. Real projects never invoice periods that have not happened.",
    )

    currency = models.CharField(
        max_length=3, default="USD", validators=[validate_currency], help_text="ISO 4217 code, e.g. USD."
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA name, e.g. Europe/Paris.",
    )

    invoice_delivery = models.CharField(
        max_length=10,
        choices=InvoiceDelivery.choices,
        default=InvoiceDelivery.AUTO,
        help_text="At period end, finalize and send invoices, or hold them for review first.",
    )
    grace_period_hours = models.PositiveIntegerField(
        default=1,
        validators=[MaxValueValidator(24 * 31)],
        help_text="How long after a period ends late usage may still land on its invoice.",
    )
    payment_terms_days = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(MAX_PAYMENT_TERMS_DAYS)]
    )
    invoice_number_prefix = models.CharField(
        max_length=20,
        default="INV",
        validators=[PatternValidator(r"^[A-Z0-9][A-Z0-9-]*$", "Capital letters, digits and dashes.")],
    )

    sender_name = models.CharField(max_length=200, blank=True)
    sender_email = models.EmailField(blank=True, help_text="From-address on your own domain.")
    reply_to_email = models.EmailField(blank=True)

    logo = models.FileField(upload_to="logos/", blank=True)
    accent_color = models.CharField(
        max_length=7,
        default="#1f6feb",
        validators=[PatternValidator(r"^#[0-9a-fA-F]{6}$", "A colour like #1f6feb.")],
    )
    footer_text = models.TextField(blank=True)
    invoice_template = models.TextField(
        blank=True,
        help_text="Optional HTML template override of the invoice PDF (docs/documents.md lists its "
        "variables). Checked by rendering a sample invoice before it is saved.",
    )

    # Who issues the invoice, as printed on it (the project's name unless set).
    company_name = models.CharField(max_length=200, blank=True)
    company_address = models.TextField(blank=True, help_text="Printed under the company name.")
    company_tax_id = models.CharField(max_length=100, blank=True)
    payment_instructions = models.TextField(
        blank=True, help_text="How to pay, printed on every invoice (bank details, payment link, …)."
    )
    locale = models.CharField(
        max_length=20,
        default="en_US",
        validators=[validate_locale],
        help_text="How invoices format money and dates (e.g. en_US, de_DE, fr_FR), unless the customer "
        "has a locale of their own.",
    )
    email_invoices = models.BooleanField(
        default=True,
        help_text="Email each invoice, with its PDF, to the customer when it is issued. Off: you "
        "deliver invoices yourself (the invoice.finalized event and GET /v1/invoices/{id}/pdf).",
    )
    email_subject_template = models.CharField(
        max_length=300, blank=True, help_text="Optional override of the invoice email's subject."
    )
    email_body_template = models.TextField(
        blank=True, help_text="Optional override of the invoice email's text."
    )

    payment_processor = models.CharField(
        max_length=10, choices=PaymentProcessor.choices, default=PaymentProcessor.MANUAL
    )
    stripe_secret_key = models.CharField(max_length=255, blank=True)
    stripe_publishable_key = models.CharField(max_length=255, blank=True)
    stripe_webhook_secret = models.CharField(max_length=255, blank=True)
    payout_delay_hours = models.PositiveIntegerField(
        default=48,
        validators=[MaxValueValidator(24 * 90)],
        help_text="How long a payment stays pending before it is available for payout (for Stripe, "
        "or Stripe's own available-on date if later).",
    )
    payment_retry_days = models.JSONField(
        default=default_payment_retry_days,
        blank=True,
        validators=[validate_retry_days],
        help_text="Dunning: retry a failed charge this many days after the first failure, e.g. [1, 3, 5, 7]; "
        "empty: no retries.",
    )
    dunning_final_action = models.CharField(
        max_length=20,
        choices=DunningFinalAction.choices,
        default=DunningFinalAction.LEAVE_OPEN,
        help_text="What happens to the invoice when the last retry fails.",
    )

    api_rate_limit_per_minute = models.PositiveIntegerField(
        default=1200, validators=[MinValueValidator(1)], help_text="Requests per minute per API key."
    )
    ingest_rate_limit_per_minute = models.PositiveIntegerField(
        default=60000,
        validators=[MinValueValidator(1)],
        help_text="Usage-ingestion requests per minute per API key (separate from the rest).",
    )
    unmatched_usage = models.CharField(
        max_length=10,
        choices=UnmatchedUsage.choices,
        default=UnmatchedUsage.KEEP,
        help_text="Usage naming a customer or meter that does not exist: store it as unmatched (it is "
        "billed once the customer or meter appears) or refuse it.",
    )
    require_usage_idempotency_key = models.BooleanField(
        default=False, help_text="Reject usage events that carry no idempotency_key."
    )
    allow_private_webhook_urls = models.BooleanField(
        default=False, help_text="Allow webhook endpoints on loopback or private networks (testing)."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A staff user's role in a project; the admin shows and allows only what the role permits."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} · {self.get_role_display()} of {self.project}"


class ApiKey(models.Model):
    """A project's API credential. Only a SHA-256 of the secret is stored; the secret is shown once."""

    public_id = PublicIdField(prefix="key")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, help_text="The first characters of the secret, for recognition.")
    secret_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Set by a roll: the old secret keeps working until then, for the grace period the caller chose.
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    # DRF treats `request.user` as the principal; an API key request has no Django user.
    is_authenticated = True

    class Meta:
        ordering = ["-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> ApiKeyStatus:
        """Revoked, else expired once `expires_at` has passed; authentication takes active and
        expiring keys."""
        if self.revoked_at is not None:
            return ApiKeyStatus.REVOKED
        if self.expires_at is None:
            return ApiKeyStatus.ACTIVE
        return ApiKeyStatus.EXPIRING if timezone.now() < self.expires_at else ApiKeyStatus.EXPIRED

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class AuditLogEntry(models.Model):
    """Who did what: staff actions in the admin and writes made with API keys. Never edited."""

    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A snapshot of who the actor was, kept even if the user or key is later removed.
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_repr}"


class ProjectVersion(models.Model):
    """A counter bumped with every change to a project or its API keys, in the change's transaction
    (billing_site.ratelimit.project_version_bump): a process's cached API key is current while
    its project's version is the one read before the key was loaded. Used without REDIS_URL."""

    # Not a foreign key: the bump for a deleted project must still land.
    project_id = models.BigIntegerField(primary_key=True)
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"project {self.project_id}: version {self.version}"
