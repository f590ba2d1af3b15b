"""django-q2 entry points: thin wrappers that call services."""

from django.utils import timezone

from webhooks import selectors, services

# A task stops taking new deliveries after this long, well inside django-q2's task timeout
# (Q_TIMEOUT_SECONDS); the scheduled run, every minute, carries on.
RUN_SECONDS = 240


def send_deliveries(delivery_ids: list[int]) -> dict[str, int]:
    """The first attempt of new deliveries, queued when their event commits. What the time budget
    leaves is due, so the scheduled run sends it."""
    return services.webhook_deliveries_send(delivery_ids=delivery_ids, max_seconds=RUN_SECONDS).as_dict()


def deliver_due_webhooks() -> dict[str, int]:
    """Every minute: the retries that are due, and first attempts whose enqueueing was lost."""
    due = selectors.webhook_deliveries_due(now=timezone.now())
    return services.webhook_deliveries_send(delivery_ids=due, max_seconds=RUN_SECONDS).as_dict()


def notify_endpoint_disabled(endpoint_id: int) -> bool:
    return services.webhook_endpoint_notify_disabled(endpoint_id=endpoint_id)
