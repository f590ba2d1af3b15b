from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from accounts.models import MAX_PAYMENT_TERMS_DAYS, Project
from billing_site.ids import PublicIdField
from catalog.models import BillingAnchor, Customer, Plan


class Status(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled (starts in the future)"
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    CANCELED = "canceled", "Canceled"
    ENDED = "ended", "Ended"


def status_expression(now=None) -> Case:
    """The status as SQL, for filtering: the same rules as `Subscription.status`."""
    now = now or timezone.now()
    return Case(
        When(Q(ends_at__lte=now) & Q(canceled_at__isnull=False), then=Value(Status.CANCELED)),
        When(ends_at__lte=now, then=Value(Status.ENDED)),
        When(starts_at__gt=now, then=Value(Status.SCHEDULED)),
        When(paused_at__isnull=False, then=Value(Status.PAUSED)),
        When(trial_ends_at__gt=now, then=Value(Status.TRIALING)),
        default=Value(Status.ACTIVE),
        output_field=models.CharField(),
    )


class Subscription(models.Model):
    """A customer on a plan. Its status is derived from its times, never stored, so it cannot go
    stale: scheduled before `starts_at`, trialing before `trial_ends_at`, paused while
    `paused_at` is set, canceled or ended from `ends_at` on.

    Billing periods are half-open [start, end) intervals computed in `timezone` (the customer's, at
    creation) from `period_anchor` (see subscriptions/periods.py). `phases` hold which plan applied
    when and the paused spans: they are the history invoices are rated from.
    """

    public_id = PublicIdField(prefix="sub")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    # The plan in effect now (a change scheduled for period end is a future phase until then).
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")

    starts_at = models.DateTimeField()
    # Billing counts from here: `starts_at`, or, for a backdated start created with
    # bill_past_periods "none", the moment of creation (nothing before it is billed).
    billed_from = models.DateTimeField()
    # A subscription created after periods of its life had already ended: those periods are billed
    # on one catch-up invoice (its opening invoice) covering [billed_from, catch_up_until), instead
    # of one invoice each. None when nothing was past.
    catch_up_until = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    trial_ends_at = models.DateTimeField(null=True, blank=True)
    billing_anchor = models.CharField(
        max_length=12, choices=BillingAnchor.choices, default=BillingAnchor.CALENDAR
    )
    period_anchor = models.DateTimeField(help_text="The instant the period grid is counted from.")
    timezone = models.CharField(max_length=64)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()

    canceled_at = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    paused_at = models.DateTimeField(null=True, blank=True)

    # Set when usage of this subscription was stored or matched since its draft invoice was last
    # recomputed (invoicing.drafts); cleared just before the draft is recomputed. Reading a stale
    # draft recomputes it first, so a draft always shows the usage accepted before the read.
    draft_stale = models.BooleanField(default=False)

    external_reference = models.CharField(max_length=255, blank=True)
    payment_terms_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_PAYMENT_TERMS_DAYS)],
        help_text="Blank: the project's.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["project", "current_period_end"], name="subscription_period_end"),
            models.Index(fields=["project", "external_reference"], name="subscription_external_ref"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} on {self.plan}"

    def status_at(self, now) -> Status:
        if self.ends_at is not None and self.ends_at <= now:
            return Status.CANCELED if self.canceled_at is not None else Status.ENDED
        if self.starts_at > now:
            return Status.SCHEDULED
        if self.paused_at is not None:
            return Status.PAUSED
        if self.trial_ends_at is not None and self.trial_ends_at > now:
            return Status.TRIALING
        return Status.ACTIVE

    @property
    def status(self) -> Status:
        return self.status_at(timezone.now())


class SubscriptionPhase(models.Model):
    """A span of a subscription's life on one plan, active or paused: [starts_at, ends_at).

    Phases never overlap and are never deleted; a change closes the open phase and opens the
    next. A phase may start in the future (a plan change scheduled for the period end).
    """

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="phases")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    paused = models.BooleanField(default=False)
    # False when the plan change that opened this phase was made with proration_behavior "none":
    # until the end of the billing period it began in, the fixed fees stay the previous phase's
    # (the new plan's fees start with the next period); usage is rated on this phase's plan.
    prorate = models.BooleanField(default=True)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "starts_at"], name="phase_start_unique"),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                name="phase_not_empty",
            ),
        ]

    def __str__(self) -> str:
        state = "paused" if self.paused else self.plan
        return f"{state} from {self.starts_at:%Y-%m-%d %H:%M}"
