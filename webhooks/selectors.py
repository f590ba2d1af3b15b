from datetime import datetime

from django.db.models import Exists, Max, Min, OuterRef, Prefetch, Q, QuerySet

from accounts.models import Project
from webhooks import retries
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


def webhook_endpoints_enabled(*, project_id: int) -> list[WebhookEndpoint]:
    """The project's enabled endpoints (events_record matches their filters to each event)."""
    return list(WebhookEndpoint.objects.filter(project_id=project_id, enabled=True).order_by("id"))


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[Delivery]:
    return (
        Delivery.objects.filter(project_id=endpoint.project_id, endpoint=endpoint)
        .select_related("endpoint", "event")
        .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))
    )


# Deliveries one run takes on at most; the rest wait for the next run.
DUE_LIMIT = 10_000


def webhook_deliveries_due(*, now: datetime, limit: int = DUE_LIMIT) -> list[int]:
    """Ids of pending deliveries whose next attempt is due and that no live worker has claimed, in
    the order their events happened. Across every project: this is the delivery worker's queue.

    Event order rather than due time: when an endpoint comes back, its backlog becomes due at once
    (some deliveries already were, the rest brought forward to the same moment), and a receiver
    catching up should get the events in the order they happened. A run takes every due delivery
    (up to the limit) anyway, so which waited longest matters less.
    """
    return list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .order_by("event_id", "id")
        .values_list("id", flat=True)[:limit]
    )


def webhook_endpoints_failing_too_long(*, now: datetime) -> list[WebhookEndpoint]:
    """Enabled endpoints whose failure streak is DISABLE_FAILING_AFTER (5 days) old or older."""
    return list(
        WebhookEndpoint.objects.filter(enabled=True, failing_since__lte=now - retries.DISABLE_FAILING_AFTER)
        .select_related("project")
        .order_by("id")
    )


def webhook_deliveries_to_probe(*, now: datetime) -> list[int]:
    """One delivery per endpoint that should be probed: the oldest pending one (first in event
    order, as the catch-up then sends the rest) of each enabled endpoint that has been failing for
    PROBE_AFTER and whose pending deliveries have no attempt due and none made for PROBE_AFTER.

    Nothing due: a due delivery is tried by this very run, and is as good a probe. Nothing made
    for PROBE_AFTER: a receiver that stays down gets one probe per PROBE_AFTER, not one a run.
    """
    quiet_since = now - retries.PROBE_AFTER
    pending = Delivery.objects.filter(status=DeliveryStatus.PENDING)
    endpoint_ids = (
        pending.filter(endpoint__enabled=True, endpoint__failing_since__lte=quiet_since)
        .values("endpoint_id")
        .annotate(next_due=Min("next_attempt_at"), last_attempt=Max("last_attempt_at"))
        .filter(next_due__gt=now)
        .filter(Q(last_attempt__isnull=True) | Q(last_attempt__lte=quiet_since))
        .order_by("endpoint_id")
        .values_list("endpoint_id", flat=True)
    )
    oldest = [
        pending.filter(endpoint_id=endpoint_id)
        .order_by("event_id", "id")
        .values_list("id", flat=True)
        .first()
        for endpoint_id in endpoint_ids
    ]
    return [delivery_id for delivery_id in oldest if delivery_id is not None]


def webhook_events_to_recover(*, endpoint: WebhookEndpoint, since: datetime, limit: int) -> list[int]:
    """Ids of the events created at or after `since` that have a failed delivery to the endpoint
    and no pending or succeeded one, in the order they happened."""
    deliveries = Delivery.objects.filter(endpoint_id=endpoint.pk)
    open_or_done = deliveries.filter(
        event_id=OuterRef("event_id"), status__in=[DeliveryStatus.PENDING, DeliveryStatus.SUCCEEDED]
    )
    return list(
        deliveries.filter(status=DeliveryStatus.FAILED, event__created_at__gte=since)
        .exclude(Exists(open_or_done))
        .order_by("event_id")
        .values_list("event_id", flat=True)
        .distinct()[:limit]
    )
