from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet

from accounts.models import Project
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, WebhookEndpoint


def event_list(*, project: Project) -> QuerySet[Event]:
    return Event.objects.filter(project=project)


def _type_pattern(pattern: str) -> tuple[str, bool]:
    """`invoice.*` → ("invoice.", True), a prefix; anything else → (pattern, False), an exact type."""
    if pattern.endswith(".*"):
        return pattern[:-1], True
    return pattern, False


def event_types_query(types: list[str], *, field: str = "type") -> Q:
    """Match event types exactly or by a trailing wildcard: `invoice.*` matches `invoice.paid`."""
    query = Q()
    for pattern in types:
        value, is_prefix = _type_pattern(pattern)
        query |= Q(**{f"{field}__startswith" if is_prefix else field: value})
    return query


def event_type_matches(event_type: str, patterns: list[str]) -> bool:
    """The same rule in Python, for an endpoint's filter; an empty filter matches every type."""
    if not patterns:
        return True
    for pattern in patterns:
        value, is_prefix = _type_pattern(pattern)
        if event_type.startswith(value) if is_prefix else event_type == value:
            return True
    return False


def webhook_endpoint_list(*, project: Project) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(project=project)


def webhook_endpoints_for_event(*, event: Event) -> list[WebhookEndpoint]:
    """The project's enabled endpoints whose filter takes this event's type."""
    endpoints = WebhookEndpoint.objects.filter(project_id=event.project_id, enabled=True).order_by("id")
    return [endpoint for endpoint in endpoints if event_type_matches(event.type, endpoint.event_types)]


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[Delivery]:
    return (
        Delivery.objects.filter(project_id=endpoint.project_id, endpoint=endpoint)
        .select_related("endpoint", "event")
        .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))
    )


# Deliveries one run takes on at most; the rest wait for the next run.
DUE_LIMIT = 10_000


def webhook_deliveries_due(*, now: datetime, limit: int = DUE_LIMIT) -> list[int]:
    """Ids of pending deliveries whose next attempt is due and that no live worker has claimed,
    oldest due first. Across every project: this is the delivery worker's queue."""
    return list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )
