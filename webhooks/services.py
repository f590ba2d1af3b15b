import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import F, Q, QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from accounts.models import Project
from accounts.selectors import project_owners
from accounts.services import Actor, audit_record
from billing_site.errors import InvalidInput, InvalidState, Unprocessable
from webhooks import retries, selectors, signing, transport
from webhooks.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    DisabledReason,
    Event,
    WebhookEndpoint,
)
from webhooks.payloads import payload_for

logger = logging.getLogger(__name__)

EVENT_TYPE_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?$")
MAX_EVENT_TYPES = 100
MAX_URL_LENGTH = 2000
ENDPOINT_FIELDS = frozenset({"url", "description", "event_types", "enabled"})
# `recover` reaches back this far, as Svix's does; a few minutes more, so a client that computes
# "now minus 14 days" a moment before its request is not refused. Older events: redeliver one by one.
RECOVER_WINDOW = timedelta(days=14)
RECOVER_WINDOW_SLACK = timedelta(minutes=5)
# Events one `recover` queues at most (Svix's cap too), so a request stays short; `has_more` says to
# call again, which carries on where this one stopped (what it queued is not queued again).
RECOVER_LIMIT = 10_000


# --- events (the outbox) -------------------------------------------------------------------------


def event_record(
    *, project: Project, type: str, obj: models.Model | None = None, data: dict | None = None
) -> Event:
    """Record an outgoing event inside the transaction of the change it describes.

    Called anywhere else it could announce a change that then rolls back, so it refuses to run
    outside a transaction. `data` defaults to `obj` as the API shows it (webhooks.payloads).
    The event's webhook deliveries are created in the same transaction and sent once it commits.
    """
    return events_record(project=project, events=[(type, obj, data)])[0]


EventSpec = tuple[str, models.Model | None, dict | None]
# Rows one INSERT writes at most: 7 parameters a row stays within SQLite's and PostgreSQL's limits.
EVENTS_PER_STATEMENT = 1000
_EVENT_FIELDS = ("public_id", "project", "type", "created_at", "object_type", "object_id", "data")
_EVENTS_INSERT = (
    "INSERT INTO webhooks_event (public_id, project_id, type, created_at, object_type, object_id, data) "
    "VALUES "
)
_EVENT_ROW = "(%s, %s, %s, %s, %s, %s, %s)"
_EVENTS_RETURNING = (
    " RETURNING id, EXISTS(SELECT 1 FROM webhooks_webhookendpoint WHERE project_id = %s AND enabled)"
)


def events_record(*, project: Project, events: list[EventSpec]) -> list[Event]:
    """Record outgoing events of one project, each given as event_record's (type, obj, data), in
    one statement per EVENTS_PER_STATEMENT events; the events in order, with their ids.

    The same rules as event_record: inside the transaction of the change they describe, `data`
    None for `obj` as the API shows it. The statement also says whether the project has an
    enabled endpoint, so a project without one pays no query for deliveries.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_record() must run inside the transaction of the change it records")
    now = timezone.now()
    recorded = []
    for type, obj, data in events:
        if data is None:
            if obj is None:
                raise ValueError("event_record() needs obj or data")
            data = payload_for(obj)
        event = Event(project=project, type=type, created_at=now, data=_jsonable(data))
        if obj is not None:
            event.object_type = obj._meta.model_name
            event.object_id = getattr(obj, "public_id", str(obj.pk))
        recorded.append(event)
    any_endpoint = False
    for start in range(0, len(recorded), EVENTS_PER_STATEMENT):
        any_endpoint = _events_insert(recorded[start : start + EVENTS_PER_STATEMENT]) or any_endpoint
    if any_endpoint:
        _deliveries_fan_out(recorded)
    return recorded


def _events_insert(events: list[Event]) -> bool:
    """INSERT the events (their ids set from RETURNING, in the order given, as Django's bulk_create
    relies on too); whether their project has an enabled endpoint, read by the same statement."""
    connection = transaction.get_connection()
    fields = [Event._meta.get_field(name) for name in _EVENT_FIELDS]
    sql = _EVENTS_INSERT + ", ".join([_EVENT_ROW] * len(events)) + _EVENTS_RETURNING
    params = [
        field.get_db_prep_save(getattr(event, field.attname), connection)
        for event in events
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, events[0].project_id])
        rows = cursor.fetchall()
    for event, (pk, _) in zip(events, rows, strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = connection.alias
    return bool(rows[0][1])


def _jsonable(data: dict) -> dict:
    """Decimals, datetimes and UUIDs as the API renders them (strings), so the row is plain JSON."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _deliveries_fan_out(events: list[Event]) -> None:
    """One delivery per enabled endpoint whose filter takes the event, in the events' transaction,
    so a committed event always has its deliveries even if enqueueing the first attempt fails."""
    endpoints = selectors.webhook_endpoints_enabled(project_id=events[0].project_id)
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                project_id=event.project_id, endpoint=endpoint, event=event, next_attempt_at=event.created_at
            )
            for event in events
            for endpoint in endpoints
            if selectors.event_type_matches(event.type, endpoint.event_types)
        ]
    )
    if deliveries:
        _send_after_commit([delivery.pk for delivery in deliveries])


def _send_after_commit(delivery_ids: list[int]) -> None:
    """Queue the first attempt once the transaction commits. A failure to enqueue is logged, not
    raised: the committed deliveries are due, and the next `deliver_webhooks` run sends them."""
    transaction.on_commit(partial(async_task, "webhooks.tasks.send_deliveries", delivery_ids), robust=True)


# --- endpoints -----------------------------------------------------------------------------------


def webhook_endpoint_clean(*, project: Project, fields: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise endpoint fields; raise InvalidInput naming the one at fault.

    The URL must be http(s) and, unless the project allows private URLs, resolve to public
    addresses only (webhooks.transport).
    """
    unknown = set(fields) - ENDPOINT_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.", code="unknown_field")
    cleaned = dict(fields)
    if "url" in fields:
        url = str(fields["url"]).strip()
        if len(url) > MAX_URL_LENGTH:
            raise InvalidInput(f"At most {MAX_URL_LENGTH} characters.", code="max_length", param="url")
        try:
            transport.url_check(url, allow_private=project.allow_private_webhook_urls)
        except transport.UrlRefused as refused:
            # A string of the documented length that cannot be used as a destination: 422.
            raise Unprocessable(refused.message, code=refused.code, param="url") from None
        cleaned["url"] = url
    if "description" in fields:
        cleaned["description"] = str(fields["description"] or "").strip()
    if "event_types" in fields:
        cleaned["event_types"] = _clean_event_types(fields["event_types"])
    return cleaned


def _clean_event_types(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput("A list of event types.", code="invalid", param="event_types")
    if len(value) > MAX_EVENT_TYPES:
        raise InvalidInput(
            f"At most {MAX_EVENT_TYPES} event types.", code="too_many_event_types", param="event_types"
        )
    types = list(value)
    for index, event_type in enumerate(types):
        if not EVENT_TYPE_PATTERN.fullmatch(event_type):
            raise InvalidInput(
                f"'{event_type}' is not an event type ('invoice.paid') or a family ('invoice.*').",
                code="invalid_event_type",
                param=f"event_types[{index}]",
            )
    return list(dict.fromkeys(types))


def webhook_endpoint_create(
    *,
    project: Project,
    url: str,
    description: str = "",
    event_types: list[str] | None = None,
    enabled: bool = True,
    actor: Actor,
) -> WebhookEndpoint:
    """A new endpoint with a new signing secret: `endpoint.secret`, for the caller to show once."""
    fields = webhook_endpoint_clean(
        project=project, fields={"url": url, "description": description, "event_types": event_types}
    )
    now = timezone.now()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            project=project,
            secret=signing.secret_generate(),
            enabled=enabled,
            disabled_reason="" if enabled else DisabledReason.MANUAL,
            disabled_at=None if enabled else now,
            **fields,
        )
        audit_record(
            project=project,
            actor=actor,
            action="webhook_endpoint.created",
            target=endpoint,
            changes={"url": endpoint.url, "event_types": endpoint.event_types, "enabled": enabled},
        )
    return endpoint


def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, changes: dict[str, Any], actor: Actor
) -> WebhookEndpoint:
    """Change the URL, description, filter or enabled flag. Disabling fails the deliveries still
    pending (they can be redelivered); enabling clears the failure history."""
    cleaned = webhook_endpoint_clean(project=endpoint.project, fields=changes)
    now = timezone.now()
    with transaction.atomic():
        current = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        audit = {
            name: [str(getattr(current, name)), str(value)]
            for name, value in cleaned.items()
            if getattr(current, name) != value
        }
        enabled = cleaned.pop("enabled", current.enabled)
        for name, value in cleaned.items():
            setattr(current, name, value)
        current.save(update_fields=[*cleaned, "updated_at"])
        if enabled and not current.enabled:
            _endpoint_enable(current)
        elif not enabled and current.enabled:
            _endpoint_disable(current, reason=DisabledReason.MANUAL, now=now)
        if audit:
            audit_record(
                project=current.project,
                actor=actor,
                action="webhook_endpoint.updated",
                target=current,
                changes=audit,
            )
    current.refresh_from_db()
    return current


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    """Delete the endpoint with its deliveries and their attempts (events stay)."""
    with transaction.atomic():
        audit_record(
            project=endpoint.project,
            actor=actor,
            action="webhook_endpoint.deleted",
            target=endpoint,
            changes={"url": endpoint.url},
        )
        endpoint.delete()


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: Actor) -> WebhookEndpoint:
    """A new signing secret. The replaced one keeps signing beside it for ROTATION_OVERLAP (24 h),
    so receivers can switch without losing a delivery; a secret replaced earlier stops at once."""
    now = timezone.now()
    with transaction.atomic():
        current = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        current.previous_secret = current.secret
        current.previous_secret_expires_at = now + signing.ROTATION_OVERLAP
        current.secret = signing.secret_generate()
        current.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
        audit_record(
            project=current.project,
            actor=actor,
            action="webhook_endpoint.secret_rotated",
            target=current,
            changes={"previous_secret_expires_at": signing.iso_timestamp(current.previous_secret_expires_at)},
        )
    return current


def _endpoint_enable(endpoint: WebhookEndpoint) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=False).update(
        enabled=True,
        disabled_reason="",
        disabled_at=None,
        disabled_notified_at=None,
        failing_since=None,
        updated_at=timezone.now(),
    )


def _endpoint_disable(
    endpoint: WebhookEndpoint, *, reason: DisabledReason, now: datetime, only_if: Q | None = None
) -> bool:
    """Disable once (False if it already was, or `only_if` no longer holds for its row) and fail
    its pending deliveries that no worker is sending right now; those finish their attempt and are
    failed at their next claim. Owners are emailed, after commit, when the disabling was automatic."""
    endpoints = WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True)
    if only_if is not None:
        endpoints = endpoints.filter(only_if)
    disabled = endpoints.update(
        enabled=False, disabled_reason=reason, disabled_at=now, disabled_notified_at=None, updated_at=now
    )
    if not disabled:
        return False
    Delivery.objects.filter(endpoint_id=endpoint.pk, status=DeliveryStatus.PENDING).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    ).update(
        status=DeliveryStatus.FAILED,
        next_attempt_at=None,
        planned_attempt_at=None,
        claimed_until=None,
        claim_token=None,
        last_error=_disabled_error(reason),
    )
    if reason != DisabledReason.MANUAL:
        transaction.on_commit(
            partial(async_task, "webhooks.tasks.notify_endpoint_disabled", endpoint.pk), robust=True
        )
    return True


def _endpoint_disable_automatically(
    endpoint: WebhookEndpoint, *, reason: DisabledReason, now: datetime, only_if: Q | None = None
) -> bool:
    """Disable for a 410 or a failure streak, with the audit record the system leaves (the attempt
    that saw it and the scheduled check both come here, so they leave the same one)."""
    if not _endpoint_disable(endpoint, reason=reason, now=now, only_if=only_if):
        return False
    audit_record(
        project=endpoint.project,
        actor=None,
        action="webhook_endpoint.disabled",
        target=endpoint,
        changes={"reason": reason.value},
    )
    return True


def _failing_too_long(now: datetime) -> Q:
    """The 5-day rule, as a condition on the endpoint row: checked by the UPDATE that disables, so a
    success recorded meanwhile (which clears failing_since) wins."""
    return Q(failing_since__lte=now - retries.DISABLE_FAILING_AFTER)


def _disabled_error(reason: str) -> str:
    return f"endpoint disabled: {DisabledReason(reason).label}"


def webhook_endpoint_notify_disabled(*, endpoint_id: int) -> bool:
    """Email the project's owners that the endpoint was disabled automatically; once per disabling
    (the mark and the handing over to the mail backend commit together)."""
    with transaction.atomic():
        claimed = (
            WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=False, disabled_notified_at__isnull=True)
            .exclude(disabled_reason=DisabledReason.MANUAL)
            .update(disabled_notified_at=timezone.now())
        )
        if not claimed:
            return False
        endpoint = WebhookEndpoint.objects.select_related("project").get(pk=endpoint_id)
        recipients = sorted(
            {membership.user.email for membership in project_owners(project=endpoint.project)} - {""}
        )
        if not recipients:
            return False
        context = {
            "endpoint": endpoint,
            "reason": DisabledReason(endpoint.disabled_reason).label,
            "admin_url": settings.SITE_URL
            + reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
        }
        send_mail(
            subject=render_to_string("webhooks/endpoint_disabled_subject.txt", context).strip(),
            message=render_to_string("webhooks/endpoint_disabled_email.txt", context),
            from_email=None,
            recipient_list=recipients,
        )
    return True


# --- deliveries ----------------------------------------------------------------------------------


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    RESCHEDULED = "rescheduled"  # failed, another attempt is scheduled
    FAILED = "failed"  # failed for good: no attempt left, or 410
    CANCELLED = "cancelled"  # not sent: the endpoint is disabled
    SKIPPED = "skipped"  # not sent: another worker has it, or it is no longer due
    ERROR = "errors"  # a bug, logged; the claim lapses and the attempt is made again


@dataclass
class DeliveryRun:
    """What a batch of attempts did."""

    succeeded: int = 0
    rescheduled: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    errors: int = 0
    left: int = 0  # not reached within the time budget

    @property
    def attempted(self) -> int:
        return self.succeeded + self.rescheduled + self.failed

    def count(self, outcome: AttemptOutcome) -> None:
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)

    def as_dict(self) -> dict[str, int]:
        return {"attempted": self.attempted, **asdict(self)}


def webhook_event_redeliver(*, event: Event, endpoint: WebhookEndpoint, actor: Actor) -> Delivery:
    """Send the event to the endpoint again, as a new delivery with the same `webhook-id`.

    An explicit request: the endpoint's event-type filter does not apply (it governs the automatic
    fan-out only). A disabled endpoint receives nothing: enable it first.
    """
    if event.project_id != endpoint.project_id:
        raise InvalidInput(f"No such event: '{event.public_id}'.", code="not_found", param="event")
    endpoint.refresh_from_db(fields=["enabled"])
    if not endpoint.enabled:
        raise InvalidState(
            "This endpoint is disabled; enable it to redeliver events to it.",
            current="disabled",
            requested="redeliver",
            code="endpoint_disabled",
        )
    with transaction.atomic():
        delivery = Delivery.objects.create(
            project_id=endpoint.project_id,
            endpoint=endpoint,
            event=event,
            is_redelivery=True,
            next_attempt_at=timezone.now(),
        )
        audit_record(
            project=endpoint.project,
            actor=actor,
            action="webhook_delivery.redelivered",
            target=delivery,
            changes={"event": event.public_id, "endpoint": endpoint.public_id},
        )
        _send_after_commit([delivery.pk])
    return delivery


@dataclass(frozen=True)
class Recovery:
    queued: int  # new deliveries, one per event, sent after commit
    has_more: bool  # RECOVER_LIMIT was reached: call again for the rest


def webhook_endpoint_recover(*, endpoint: WebhookEndpoint, since: datetime, actor: Actor) -> Recovery:
    """Send again, once, every event created at or after `since` whose deliveries to this endpoint
    have all failed (Svix's "recover"): after an outage, or after re-enabling a disabled endpoint.

    Each event gets one new delivery (a redelivery: same `webhook-id`, a fresh retry schedule), in
    the order the events happened; the failed rows stay as the record of what happened. An event
    that already has a pending or succeeded delivery to the endpoint is skipped, so calling this
    twice sends nothing twice. Events recorded while the endpoint was disabled have no delivery to
    it, hence nothing to recover (redeliver them one by one). The endpoint must be enabled.
    """
    now = timezone.now()
    # Well-formed times outside the window: 422 (docs/api.md, "400 or 422").
    if since > now:
        raise Unprocessable("`since` is in the future.", code="since_in_future", param="since")
    if since < now - RECOVER_WINDOW - RECOVER_WINDOW_SLACK:
        raise Unprocessable(
            f"`since` may go back {RECOVER_WINDOW.days} days at most; redeliver older events one by one.",
            code="since_too_old",
            param="since",
        )
    with transaction.atomic():
        # The endpoint's row lock serialises recoveries of one endpoint: a concurrent one waits here,
        # then its selection (a later statement) sees the deliveries this one created. No unique
        # constraint can say "once" instead: an explicit redelivery may repeat a succeeded event.
        current = WebhookEndpoint.objects.select_for_update().select_related("project").get(pk=endpoint.pk)
        if not current.enabled:
            raise InvalidState(
                "This endpoint is disabled; enable it to recover its failed deliveries.",
                current="disabled",
                requested="recover",
                code="endpoint_disabled",
            )
        event_ids = selectors.webhook_events_to_recover(
            endpoint=current, since=since, limit=RECOVER_LIMIT + 1
        )
        has_more = len(event_ids) > RECOVER_LIMIT
        deliveries = Delivery.objects.bulk_create(
            [
                Delivery(
                    project_id=current.project_id,
                    endpoint=current,
                    event_id=event_id,
                    is_redelivery=True,
                    next_attempt_at=now,
                )
                for event_id in event_ids[:RECOVER_LIMIT]
            ]
        )
        if deliveries:
            audit_record(
                project=current.project,
                actor=actor,
                action="webhook_endpoint.recovered",
                target=current,
                changes={"since": signing.iso_timestamp(since), "queued": len(deliveries)},
            )
            _send_after_commit([delivery.pk for delivery in deliveries])
    return Recovery(queued=len(deliveries), has_more=has_more)


def _claim_lease() -> timedelta:
    """Longer than any attempt can take (each of connect, write and read may use the timeout)."""
    return timedelta(seconds=4 * settings.WEBHOOK_TIMEOUT_SECONDS + 60)


def webhook_delivery_attempt(*, delivery_id: int) -> AttemptOutcome:
    """Make the due attempt of one delivery unless another worker has it, and record it.

    Any number of processes may call this at once: the claim is a compare-and-swap on the row
    (pending, due, and not claimed by a live worker) and only the one whose UPDATE matched sends.
    A worker that dies mid-attempt leaves a claim that lapses after the lease; the attempt is then
    made again by the next run.
    """
    now = timezone.now()
    token = uuid.uuid4()
    claimed = (
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .update(claimed_until=now + _claim_lease(), claim_token=token)
    )
    if not claimed:
        return AttemptOutcome.SKIPPED
    delivery = Delivery.objects.select_related("endpoint", "event", "project").filter(pk=delivery_id).first()
    if delivery is None:  # the endpoint was deleted, with its deliveries, since the claim
        return AttemptOutcome.SKIPPED
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        Delivery.objects.filter(pk=delivery_id, claim_token=token, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED,
            next_attempt_at=None,
            planned_attempt_at=None,
            claimed_until=None,
            claim_token=None,
            last_error=_disabled_error(endpoint.disabled_reason or DisabledReason.MANUAL),
        )
        return AttemptOutcome.CANCELLED

    body = signing.payload_body(delivery.event)
    now = timezone.now()
    headers = signing.signed_headers(
        msg_id=delivery.event.public_id,
        body=body,
        keys=signing.signing_secrets(endpoint, now=now),
        now=now,
    )
    result = transport.post(
        url=endpoint.url,
        allow_private=delivery.project.allow_private_webhook_urls,
        headers=headers,
        body=body.encode(),
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
    )
    return _attempt_record(delivery, token=token, result=result)


def _attempt_record(delivery: Delivery, *, token: uuid.UUID, result: transport.PostResult) -> AttemptOutcome:
    finished_at = timezone.now()
    number = delivery.attempt_count + 1
    # As read after the claim. A bringing forward by a process whose `now` was read before the
    # delivery fell due may still change the row while we hold it; the UPDATE below overwrites what
    # it set, so the attempt is recorded as what it was when we read it.
    early = delivery.planned_attempt_at is not None
    early_failures = delivery.early_failures
    next_attempt_at = None
    if result.succeeded:
        outcome, status = AttemptOutcome.SUCCEEDED, DeliveryStatus.SUCCEEDED
    elif result.status_code == 410:
        outcome, status = AttemptOutcome.FAILED, DeliveryStatus.FAILED
    elif early:
        # The invariant behind the documented schedule: a failed early attempt is recorded but not
        # counted (early_failures), and the delivery goes back to the retry it had planned, so probes
        # and catch-ups never use up the ten attempts of the schedule nor shorten its three days.
        outcome, status = AttemptOutcome.RESCHEDULED, DeliveryStatus.PENDING
        next_attempt_at = retries.retry_after_early_failure(
            planned=delivery.planned_attempt_at, now=finished_at, retry_after=result.retry_after
        )
        early_failures += 1
    else:
        delay = retries.retry_delay(
            attempts_made=number - early_failures,
            retry_after=result.retry_after,
            jitter=random.uniform(-1, 1),  # noqa: S311 - spreads retries; nothing secret
        )
        if delay is None:
            outcome, status = AttemptOutcome.FAILED, DeliveryStatus.FAILED
        else:
            outcome, status = AttemptOutcome.RESCHEDULED, DeliveryStatus.PENDING
            next_attempt_at = finished_at + delay
    with transaction.atomic():
        recorded = Delivery.objects.filter(
            pk=delivery.pk, claim_token=token, status=DeliveryStatus.PENDING
        ).update(
            status=status,
            attempt_count=number,
            early_failures=early_failures,
            next_attempt_at=next_attempt_at,
            planned_attempt_at=None,
            claimed_until=None,
            claim_token=None,
            last_attempt_at=result.started_at,
            last_status_code=result.status_code,
            last_error=result.error,
            succeeded_at=finished_at if result.succeeded else None,
        )
        if not recorded:
            # Only when this attempt outlived its lease and another worker took the delivery over,
            # or the endpoint was deleted meanwhile: the delivery's state is theirs to record.
            logger.warning(
                "Webhook delivery %s: claim lapsed before the attempt was recorded", delivery.public_id
            )
            return AttemptOutcome.SKIPPED
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=result.started_at,
            duration_ms=result.duration_ms,
            url=delivery.endpoint.url,
            status_code=result.status_code,
            succeeded=result.succeeded,
            early=early,
            response_body=result.response_body,
            error=result.error,
        )
        _endpoint_health(delivery, result=result, now=finished_at)
    return outcome


def _endpoint_health(delivery: Delivery, *, result: transport.PostResult, now: datetime) -> None:
    """A success clears the endpoint's failure streak, and when the streak was an outage
    (CATCH_UP_AFTER or longer) brings its pending deliveries forward; a failure starts a streak,
    and a 410 or a streak of DISABLE_FAILING_AFTER (5 days) without a success disables it."""
    endpoints = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
    if result.succeeded:
        # Two conditional UPDATEs, not a read: of concurrent successes only one ends the streak,
        # so only one catches up.
        if endpoints.filter(failing_since__lte=now - retries.CATCH_UP_AFTER).update(failing_since=None):
            _deliveries_bring_forward(Delivery.objects.filter(endpoint_id=delivery.endpoint_id), now=now)
        else:
            endpoints.filter(failing_since__isnull=False).update(failing_since=None)
        return
    endpoints.filter(failing_since__isnull=True).update(failing_since=now)
    endpoint = delivery.endpoint
    if result.status_code == 410:
        _endpoint_disable_automatically(endpoint, reason=DisabledReason.GONE, now=now)
    else:
        _endpoint_disable_automatically(
            endpoint, reason=DisabledReason.FAILING, now=now, only_if=_failing_too_long(now)
        )


def _deliveries_bring_forward(deliveries: QuerySet[Delivery], *, now: datetime) -> int:
    """Make these deliveries' next attempts early: due now, with the retry each had planned kept in
    planned_attempt_at to go back to if it fails. Only pending deliveries whose next attempt is
    later and that are not early already. Returns how many were brought forward (a compare-and-swap:
    of processes bringing the same delivery forward, one counts it)."""
    return deliveries.filter(
        status=DeliveryStatus.PENDING,
        next_attempt_at__gt=now,
        # Not "implied by next_attempt_at > now": a process whose `now` was read a moment before
        # another's bringing forward would match again and overwrite the planned retry with the
        # other's `now`, so a failed early attempt would go back to a retry due at once, and count.
        planned_attempt_at__isnull=True,
    ).update(
        # Both right-hand sides read the row as it was (SQL evaluates SET against the old row).
        planned_attempt_at=F("next_attempt_at"),
        next_attempt_at=now,
    )


@dataclass
class FailingEndpointsCheck:
    """What the scheduled check of failing endpoints did."""

    disabled: int = 0  # endpoints failing for DISABLE_FAILING_AFTER
    probed: int = 0  # deliveries brought forward to find out whether their endpoint is back

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def webhook_failing_endpoints_check() -> FailingEndpointsCheck:
    """Every minute, before the due deliveries are sent: what failing endpoints need when no
    attempt happens to look at them.

    - The 5-day rule: an endpoint failing for DISABLE_FAILING_AFTER is disabled (its owners
      emailed, once) even when all its deliveries have given up and no event comes any more.
    - A probe: a failing endpoint with deliveries waiting, none due and none tried for PROBE_AFTER
      (10 minutes) has its oldest pending delivery tried now, early. If the receiver is back, that
      success brings the rest forward; if not, the attempt does not count (see _attempt_record).

    Safe in several processes at once: each disabling and each probe is a conditional UPDATE, and
    only the process whose UPDATE matched counts it (and, for a disabling, audits and emails).
    """
    now = timezone.now()
    check = FailingEndpointsCheck()
    for endpoint in selectors.webhook_endpoints_failing_too_long(now=now):
        with transaction.atomic():
            if _endpoint_disable_automatically(
                endpoint, reason=DisabledReason.FAILING, now=now, only_if=_failing_too_long(now)
            ):
                check.disabled += 1
    for delivery_id in selectors.webhook_deliveries_to_probe(now=now):
        check.probed += _deliveries_bring_forward(Delivery.objects.filter(pk=delivery_id), now=now)
    return check


def webhook_deliveries_send(
    *,
    delivery_ids: list[int],
    max_seconds: float | None = None,
    progress: Callable[[AttemptOutcome], None] | None = None,
) -> DeliveryRun:
    """Attempt each delivery in turn (those another worker holds are skipped), stopping before the
    next one once `max_seconds` have passed."""
    run = DeliveryRun()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    for index, delivery_id in enumerate(delivery_ids):
        if deadline is not None and time.monotonic() >= deadline:
            run.left = len(delivery_ids) - index
            break
        try:
            outcome = webhook_delivery_attempt(delivery_id=delivery_id)
        except Exception:
            # One delivery that trips a bug must not hold up the others behind it.
            logger.exception("Webhook delivery %s: the attempt failed with an error", delivery_id)
            outcome = AttemptOutcome.ERROR
        run.count(outcome)
        if progress is not None:
            progress(outcome)
    return run
