from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q

from accounts.models import Project
from billing_site.ids import PublicIdField
from billing_site.validators import PatternValidator

code_validator = PatternValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$",
    "Letters, digits and _ . : - (starting with a letter or digit).",
    "invalid_code",
)


class Aggregation(models.TextChoices):
    COUNT = "count", "Count of events"
    SUM = "sum", "Sum"
    MAX = "max", "Maximum"
    MIN = "min", "Minimum"
    UNIQUE_COUNT = "unique_count", "Count of distinct values"
    LATEST = "latest", "Latest value in the period"
    AVG = "avg", "Average (mean) value"
    WEIGHTED_SUM = "weighted_sum", "Time-weighted sum (value × time held)"


class Bucket(models.TextChoices):
    """A bucketed meter aggregates per UTC hour or day, then sums the bucket results."""

    HOUR = "hour", "Per UTC hour, summed"
    DAY = "day", "Per UTC day, summed"


class Rounding(models.TextChoices):
    ROUND = "round", "Round half up"
    CEIL = "ceil", "Round up (ceiling)"
    FLOOR = "floor", "Round down (floor)"


class WeightedInput(models.TextChoices):
    LEVEL = "level", "Each event sets the level"
    INCREMENT = "increment", "Each event changes the level by its value"


MAX_ROUNDING_PRECISION = 12


class FilterOperator(models.TextChoices):
    IN = "in"
    NOT_IN = "not_in"
    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


class Meter(models.Model):
    """A usage signal. `code` is the event name clients report usage under.

    `property` names the event property aggregated; blank means the event's `value`. `filters` is a
    list of {"property", "operator", "value" | "values"} that events must all match; `group_by`
    lists property names usage can be broken down by.
    """

    public_id = PublicIdField(prefix="mtr")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    code = models.CharField(max_length=100, validators=[code_validator])
    name = models.CharField(max_length=200)
    unit = models.CharField(max_length=50, blank=True, help_text="Unit label, e.g. calls, GB, seats.")
    aggregation = models.CharField(max_length=20, choices=Aggregation.choices, default=Aggregation.SUM)
    property = models.CharField(max_length=100, blank=True)
    filters = models.JSONField(default=list, blank=True)
    group_by = models.JSONField(default=list, blank=True)
    whole_numbers_only = models.BooleanField(default=False, help_text="Reject values with a fraction.")
    allow_negative = models.BooleanField(default=False, help_text="Accept negative values (corrections).")
    # Null: the aggregation runs over the whole period. Set: per UTC bucket (and group), summed.
    bucket = models.CharField(
        max_length=4,
        choices=Bucket.choices,
        null=True,
        blank=True,
        help_text="Aggregate per UTC hour or day and sum the results (e.g. peak per hour, summed).",
    )
    # Applied to the period's quantity (and each group's) before pricing; null: exact.
    rounding = models.CharField(
        max_length=5,
        choices=Rounding.choices,
        null=True,
        blank=True,
        help_text="Round the period's quantity before pricing: round (half up), ceil or floor.",
    )
    rounding_precision = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_ROUNDING_PRECISION)],
        help_text="Decimal places kept by the rounding (0 to 12).",
    )
    weighted_input = models.CharField(
        max_length=9,
        choices=WeightedInput.choices,
        default=WeightedInput.LEVEL,
        help_text="weighted_sum only: whether each event sets the level or changes it (+/-).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["project", "code"], name="meter_code_unique")]

    def __str__(self) -> str:
        return self.name or self.code


# Event values: up to 20 digits before the point and 12 after (|value| < 10^20). Out of range is
# rejected at ingestion (`value_out_of_range`), never rounded.
VALUE_DIGITS = 32
VALUE_PLACES = 12
# Rollup sums hold up to 10^16 events at the largest value per hour before they could overflow.
SUM_DIGITS = 48


class UnmatchedReason(models.TextChoices):
    UNKNOWN_CUSTOMER = "unknown_customer", "Unknown customer"
    # Named by the processor's customer ID (stripeCustomerId), which `customer_external_id` then
    # holds: rematching looks it up as a processor_customer_id, not as an external_id.
    UNKNOWN_PROCESSOR_CUSTOMER = "unknown_processor_customer", "Unknown processor customer ID"
    UNKNOWN_METER = "unknown_meter", "Unknown meter"
    NO_ACTIVE_SUBSCRIPTION = "no_active_subscription", "No subscription prices the meter at that time"
    # Stored before its meter existed, and the meter does not allow the value (a fraction for a
    # whole-numbers meter, a negative value without allow_negative).
    INVALID_VALUE = "invalid_value", "Value not allowed by the meter"


def _unchecked_reference(to) -> models.ForeignKey:
    """How an event matched: optional, never cascading, without a database constraint (see below)."""
    return models.ForeignKey(
        to,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )


class UsageEvent(models.Model):
    """One report of usage, stored as sent and never updated or deleted by ingestion.

    `customer_external_id` and `meter_code` say what the client named (see the fields);
    `customer`, `meter` and `subscription` say how the event matched, `unmatched_reason` why it
    did not (blank when matched: then all three are set). Rematching (`usage_rematch`) is the only
    writer after the insert, and it only sets these match columns (and `matched_at`) on events that
    are still unmatched: a matched event never changes. An event that names its subscription is
    stored matched to it or refused, never unmatched, so no rematch can give it another one.

    Deduplication is the unique constraint on (project, idempotency_key): ingestion inserts with
    ON CONFLICT DO NOTHING, so a key counts once however many requests race with it. NULL keys
    never conflict.
    """

    id = models.BigAutoField(primary_key=True)
    # Unique through the constraint below rather than unique=True, which on PostgreSQL would add a
    # second (LIKE) index that every insert pays for and nothing uses.
    public_id = PublicIdField(prefix="evt", unique=False)
    # No database-level foreign keys on this table (db_constraint=False): at 1,000 rows per
    # statement, PostgreSQL's per-row referential checks cost as much as the insert itself
    # (measured: 30 ms of commit time per 1,000 events, see docs/performance.md). The ids come
    # from lookups in the same project, events are never deleted, and Django still enforces
    # PROTECT: a customer, meter or subscription with usage cannot be deleted.
    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    # As sent (an external_id, an ID or a processor's customer ID), or the external_id of the
    # customer of the subscription the event named.
    customer_external_id = models.CharField(max_length=255)
    meter_code = models.CharField(max_length=100)  # the meter's code; as sent, if no meter has it
    value = models.DecimalField(max_digits=VALUE_DIGITS, decimal_places=VALUE_PLACES)
    timestamp = models.DateTimeField()  # UTC
    properties = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    received_at = models.DateTimeField()

    customer = _unchecked_reference("catalog.Customer")
    meter = _unchecked_reference(Meter)
    subscription = _unchecked_reference("subscriptions.Subscription")
    unmatched_reason = models.CharField(max_length=30, choices=UnmatchedReason.choices, blank=True)
    # When the event matched: its receipt, or the rematch that found its subscription later. The
    # invoicing of a finalized period looks for events matched after it was finalized (late usage).
    matched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "usage event"
        constraints = [
            models.UniqueConstraint(fields=["public_id"], name="usage_event_public_id_unique"),
            models.UniqueConstraint(fields=["project", "idempotency_key"], name="usage_event_key_unique"),
            models.CheckConstraint(
                condition=Q(unmatched_reason="", subscription__isnull=False, customer__isnull=False,
                            meter__isnull=False)
                | (~Q(unmatched_reason="") & Q(subscription__isnull=True)),
                name="usage_event_match_state",
            ),
        ]  # fmt: skip
        indexes = [
            # Rating, current usage and summaries: one meter of one customer (or subscription) over
            # a window. Not subscription first: a subscription's events are its customer's, and
            # the meter leads so that "does any event use this meter" (the aggregation lock,
            # PROTECT on delete) is an index probe too.
            models.Index(fields=["meter", "customer", "timestamp"], name="usage_event_meter_customer"),
            # Project-wide summaries and the admin's time range. (Per-customer queries are per
            # meter too, so they use the index above; one index fewer keeps ingestion fast.)
            models.Index(fields=["project", "timestamp"], name="usage_event_project_time"),
            # The unmatched queue and rematching: small, because matched events are not in it.
            models.Index(
                fields=["project", "customer_external_id", "meter_code"],
                name="usage_event_unmatched",
                condition=~Q(unmatched_reason=""),
            ),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_matched(self) -> bool:
        return not self.unmatched_reason


class UnmatchedUsageEvent(UsageEvent):
    """The admin's unmatched queue: the same rows, listed apart."""

    class Meta:
        proxy = True
        verbose_name = "unmatched usage event"


class UsageRollup(models.Model):
    """Hourly totals of matched events per subscription and meter, for fast period totals.

    Invariant: every row equals count/sum/min/max over the matched events of its subscription and
    meter with `hour <= timestamp < hour + 1 h` (UTC). It is written only in the same statement or
    transaction that inserts or matches those events (ingestion, rematching), with an upsert that
    adds, so it never drifts; a property-based test compares it with the raw events.
    """

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+", db_index=False)
    subscription = models.ForeignKey(
        "subscriptions.Subscription", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="+", db_index=False)
    hour = models.DateTimeField()  # UTC, on the hour
    event_count = models.BigIntegerField()
    value_sum = models.DecimalField(max_digits=SUM_DIGITS, decimal_places=VALUE_PLACES)
    value_min = models.DecimalField(max_digits=VALUE_DIGITS, decimal_places=VALUE_PLACES)
    value_max = models.DecimalField(max_digits=VALUE_DIGITS, decimal_places=VALUE_PLACES)
    # When an event was last added to this hour (its `matched_at`). An hour of an invoiced period
    # touched after the period began holds late usage: invoicing looks for exactly these.
    last_matched_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscription", "meter", "hour"], name="usage_rollup_unique")
        ]
        indexes = [models.Index(fields=["meter"], name="usage_rollup_meter")]

    def __str__(self) -> str:
        return f"{self.meter_id} {self.hour:%Y-%m-%d %H}:00"
