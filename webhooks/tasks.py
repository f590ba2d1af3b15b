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
    """Every minute: the check of failing endpoints, then the retries that are due (probes
    included) and first attempts whose enqueueing was lost.

    The check runs here rather than as a job of its own: the probes it brings forward are sent by
    this same run, so a returning receiver is noticed within PROBE_AFTER plus the minute between
    runs, with no second schedule to keep in step; an endpoint past the 5-day rule is disabled
    before this run sends to it; and a cron setup that runs only `deliver_webhooks` gets it too
    (the command does the same).
    """
    check = services.webhook_failing_endpoints_check()
    due = selectors.webhook_deliveries_due(now=timezone.now())
    run = services.webhook_deliveries_send(delivery_ids=due, max_seconds=RUN_SECONDS)
    return {**run.as_dict(), **check.as_dict()}


def notify_endpoint_disabled(endpoint_id: int) -> bool:
    return services.webhook_endpoint_notify_disabled(endpoint_id=endpoint_id)
