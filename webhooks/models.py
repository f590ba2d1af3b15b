from django.db import models

from accounts.models import Project
from billing_site.ids import PublicIdField


class Event(models.Model):
    """One state change, written in the same transaction as the change itself (the outbox).

    The same rows are the activity log (`GET /v1/activity`) and the source of webhook deliveries.
    Never updated or deleted.
    """

    # `msg_` as in Standard Webhooks: this id is the `webhook-id` of every delivery of the event.
    # (`evt_` belongs to usage events, as the ingestion API shows them.)
    public_id = PublicIdField(prefix="msg")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["project", "type", "id"], name="event_project_type"),
            models.Index(fields=["project", "object_id"], name="event_project_object"),
            models.Index(fields=["project", "created_at"], name="event_project_created"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.object_id}".strip()


class DisabledReason(models.TextChoices):
    MANUAL = "manual", "Disabled by a user"
    GONE = "gone", "The endpoint answered 410 Gone"
    FAILING = "failing", "No successful delivery for 5 days"


class WebhookEndpoint(models.Model):
    """Where a project's events are sent, signed with the endpoint's secret (Standard Webhooks)."""

    public_id = PublicIdField(prefix="we")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    url = models.CharField(max_length=2000)  # http(s); checked by webhooks.transport.url_check
    description = models.CharField(max_length=500, blank=True)
    # Event types to send: exact (`invoice.paid`) or a family (`invoice.*`); empty means all.
    event_types = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=10, choices=DisabledReason.choices, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Set when the owners were emailed about an automatic disabling (at most one email per disabling).
    disabled_notified_at = models.DateTimeField(null=True, blank=True)
    # `whsec_` + base64. Stored in clear because it signs every delivery; never logged, shown once.
    secret = models.CharField(max_length=100)
    # The secret replaced by the last rotation: deliveries carry its signature too until it expires.
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # The first failed attempt since the last successful one; None while the endpoint is healthy.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "webhook endpoint"
        indexes = [models.Index(fields=["project", "enabled"], name="endpoint_project_enabled")]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # waiting for its first attempt or a retry
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"  # terminal: retries exhausted or endpoint disabled


class Delivery(models.Model):
    """One event sent to one endpoint, over as many attempts as the retry schedule allows.

    The event fan-out creates one per matching endpoint in the transaction that records the event
    (so none is lost); a redelivery is another row for the same event and endpoint, and carries
    the same `webhook-id` (the event's id).
    """

    public_id = PublicIdField(prefix="whd")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="deliveries")
    is_redelivery = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the next attempt is due; None once the delivery is terminal.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A worker's claim on the next attempt: whoever set claim_token owns it until claimed_until,
    # after which a crashed worker's claim lapses and another worker may take it.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)  # every attempt made, early ones included
    # The retry schedule (webhooks.retries) counts `attempt_count - early_failures` attempts: an
    # early attempt (a probe of a failing endpoint, or a catch-up after it came back; see
    # webhooks.services) that fails does not use up a step, so the documented ten attempts over
    # about three days still hold for ordinary retries.
    early_failures = models.PositiveIntegerField(default=0)
    # Set while the next attempt is early: the retry the schedule had planned, which a failed early
    # attempt goes back to. Cleared by the attempt; never overwritten before it (bringing forward
    # requires it empty), so a planned retry cannot be lost.
    planned_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            # The fan-out delivers an event to an endpoint once; redeliveries are extra rows.
            models.UniqueConstraint(
                fields=["event", "endpoint"],
                condition=models.Q(is_redelivery=False),
                name="delivery_once_per_event_endpoint",
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(status="pending"),
                name="delivery_due",
            ),
            models.Index(fields=["endpoint", "id"], name="delivery_endpoint"),
            # `recover`: an endpoint's failed deliveries in event order.
            models.Index(
                fields=["endpoint", "event"],
                condition=models.Q(status="failed"),
                name="delivery_failed",
            ),
            models.Index(fields=["project", "id"], name="delivery_project"),
        ]

    def __str__(self) -> str:
        return self.public_id


class DeliveryAttempt(models.Model):
    """One HTTP request of a delivery and what came back. Never edited."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()  # 1 for the first attempt of the delivery
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    url = models.CharField(max_length=2000)  # the endpoint's URL at the time
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)  # None: no response
    succeeded = models.BooleanField()
    # Made before the schedule asked for it (a probe or a catch-up): not counted if it failed.
    early = models.BooleanField(default=False)
    response_body = models.TextField(blank=True)  # truncated (webhooks.transport.RESPONSE_BODY_LIMIT)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"
