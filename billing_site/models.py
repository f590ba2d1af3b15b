from django.db import models

from accounts.models import Project


class IdempotencyRecord(models.Model):
    """The first response to a POST/PATCH carrying an `Idempotency-Key`, replayed on repeats.

    The unique constraint on (project, key) is what makes "exactly one request executes" true
    when two arrive at once: the second insert fails and that request gets 409.
    """

    class Status(models.TextChoices):
        IN_FLIGHT = "in_flight"
        DONE = "done"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of method, path and the request body (canonical JSON where it parses).
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.IN_FLIGHT)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    locked_at = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True)
    response_content_type = models.CharField(max_length=100, blank=True)
    response_body = models.BinaryField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class RateLimitCounter(models.Model):
    """Requests seen in the current one-minute window, per API key and limit scope.

    Used when REDIS_URL is not set. One row per (key, scope), reset in place by an upsert, so the
    table never grows and the count is exact across processes.
    """

    bucket = models.CharField(max_length=64, unique=True)
    window_start = models.BigIntegerField()
    hits = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.bucket}: {self.hits}"
