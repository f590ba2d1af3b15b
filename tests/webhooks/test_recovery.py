"""After an outage: the scheduled disabling, probes, the catch-up, and `recover`, against a real
receiver on loopback with the clock frozen and moved by hand."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
import time_machine
from django.db.models import Max, Min
from django.utils import timezone

from accounts.models import AuditLogEntry, Role, Scope
from tests.accounts.factories import MembershipFactory
from tests.conftest import api_client
from tests.webhooks.conftest import Reply
from tests.webhooks.factories import make_endpoint, record_event
from webhooks import services
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus
from webhooks.retries import CATCH_UP_AFTER, PROBE_AFTER, RETRY_DELAYS, RETRY_JITTER
from webhooks.tasks import deliver_due_webhooks

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def loopback_api(loopback_project):
    """A client of the endpoint's project. Request it before `endpoint`: its key then exists before
    the endpoint, so the key's `api_key.created` event has no delivery among the outage's."""
    return api_client(loopback_project)


@pytest.fixture
def endpoint(loopback_project, receiver):
    endpoint = make_endpoint(loopback_project, url=receiver.url)
    receiver.secret = endpoint.secret
    return endpoint


@pytest.fixture
def job(django_capture_on_commit_callbacks):
    """One run of the every-minute scheduled job, and what its commits trigger (the owners' email)."""

    def run() -> dict[str, int]:
        with django_capture_on_commit_callbacks(execute=True):
            return deliver_due_webhooks()

    return run


def _drive(clock, job, *, until: datetime, every: timedelta) -> Counter:
    """Run the job on a grid of `every` from now until `until` (excluded), and also whenever a
    retry falls due in between, as the every-minute job would send it within its minute: what a
    job every minute does, without a run per minute of a days-long outage. Returns the runs' sums."""
    totals: Counter = Counter()
    grid = timezone.now() + every
    while True:
        now = timezone.now()
        due = Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__gt=now).aggregate(
            at=Min("next_attempt_at")
        )["at"]
        next_run = grid if due is None else min(grid, due)
        if next_run >= until:
            return totals
        clock.move_to(next_run)
        if next_run == grid:
            grid += every
        totals.update(job())


def _on_schedule(starts: list[datetime]) -> bool:
    """Each gap between these attempts is the schedule's step, give or take the jitter."""
    return all(
        RETRY_DELAYS[step] * (1 - RETRY_JITTER) <= after - before <= RETRY_DELAYS[step] * (1 + RETRY_JITTER)
        for step, (before, after) in enumerate(pairwise(starts))
    )


def test_a_backlog_is_delivered_within_15_minutes_of_the_receiver_coming_back_in_creation_order(
    endpoint, receiver, record, job
):
    # The job probes every 10 minutes while the endpoint fails (its grid here), the last time at
    # 23:50 after the first event. The receiver comes back 30 seconds later: the worst moment, a
    # full probe interval ahead. No retry is scheduled near then: the events' next retries are
    # 4 to 10 hours away (ranges with the jitter: 28.4-34.8 h, 25.8-29.3 h, 26.8-28.3 h).
    back_at = T0 + timedelta(hours=23, minutes=50, seconds=30)
    receiver.default = lambda: Reply(503 if timezone.now() < back_at else 200)

    with time_machine.travel(T0, tick=False) as clock:
        first = record(endpoint.project, "invoice.created")
        _drive(clock, job, until=T0 + timedelta(hours=10), every=timedelta(minutes=10))
        clock.move_to(T0 + timedelta(hours=10))
        second = record(endpoint.project, "invoice.finalized")
        _drive(clock, job, until=T0 + timedelta(hours=20), every=timedelta(minutes=10))
        clock.move_to(T0 + timedelta(hours=20))
        third = record(endpoint.project, "invoice.paid")
        _drive(clock, job, until=back_at, every=timedelta(minutes=10))
        assert receiver.delivered() == []
        runs = []
        for minute in range(1, 16):
            clock.move_to(back_at + timedelta(minutes=minute))
            runs.append(job())

    assert receiver.delivered() == [first.public_id, second.public_id, third.public_id]
    assert receiver.all_verified()
    # Ten minutes after the last probe, the next one (the oldest delivery) succeeds; it ends an outage
    # of a day, so the other two are brought forward and sent by the next run, oldest first.
    assert [run["probed"] for run in runs] == [0] * 9 + [1] + [0] * 5
    deliveries = [Delivery.objects.get(event=event) for event in (first, second, third)]
    assert [delivery.succeeded_at for delivery in deliveries] == [
        back_at + timedelta(minutes=10),
        back_at + timedelta(minutes=11),
        back_at + timedelta(minutes=11),
    ]
    assert [delivery.status for delivery in deliveries] == [DeliveryStatus.SUCCEEDED] * 3
    # Probes and the catch-up are early attempts: the schedule's own attempts were all made on time,
    # 7, 6 and 5 of them before the receiver came back, and none was used up by a probe.
    for delivery, scheduled in zip(deliveries, (7, 6, 5), strict=True):
        on_time = list(delivery.attempts.filter(early=False).values_list("started_at", flat=True))
        assert len(on_time) == scheduled
        assert _on_schedule(on_time)
        assert on_time[0] == delivery.event.created_at
        failed_early = delivery.attempts.filter(early=True, succeeded=False).count()
        assert delivery.early_failures == failed_early
        assert delivery.attempt_count == scheduled + failed_early + 1
        assert (delivery.attempts.last().early, delivery.attempts.last().succeeded) == (True, True)
    assert deliveries[0].early_failures > 0  # the probes during the outage
    assert [deliveries[1].early_failures, deliveries[2].early_failures] == [0, 0]
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.failing_since) == (True, None)


def test_failed_probes_do_not_use_up_the_retry_schedule(endpoint, receiver, record, job):
    receiver.default = Reply(503)

    with time_machine.travel(T0, tick=False) as clock:
        record(endpoint.project)
        # A run every 30 minutes (and at each retry): each finds 10 quiet minutes and probes.
        totals = _drive(clock, job, until=T0 + timedelta(days=4), every=timedelta(minutes=30))

    delivery = Delivery.objects.get()
    attempts = list(delivery.attempts.all())
    on_time = [attempt for attempt in attempts if not attempt.early]
    probes = [attempt for attempt in attempts if attempt.early]
    # The documented schedule holds: ten attempts over about three days, then the delivery failed.
    assert len(on_time) == 10
    assert _on_schedule([attempt.started_at for attempt in on_time])
    assert delivery.status == DeliveryStatus.FAILED
    assert attempts[-1] == on_time[-1]
    # Besides, every probe: recorded, failed, not counted, and never within 10 minutes of another attempt.
    assert len(probes) == totals["probed"] > 100
    assert not any(probe.succeeded for probe in probes)
    assert (delivery.attempt_count, delivery.early_failures) == (10 + len(probes), len(probes))
    assert [attempt.number for attempt in attempts] == list(range(1, delivery.attempt_count + 1))
    for before, attempt in pairwise(attempts):
        if attempt.early:
            assert attempt.started_at - before.started_at >= PROBE_AFTER
    assert totals["disabled"] == 0


def test_a_probe_answered_with_retry_after_waits_as_asked(endpoint, receiver, record, job):
    receiver.script(500, 500, 500, Reply(429, {"Retry-After": str(6 * 3600)}))

    with time_machine.travel(T0, tick=False) as clock:
        record(endpoint.project)
        for _ in range(2):  # the retries after 5 s and 5 min: the next one is 30 min later
            clock.move_to(Delivery.objects.get().next_attempt_at)
            job()
        delivery = Delivery.objects.get()
        probed_at = delivery.last_attempt_at + PROBE_AFTER
        clock.move_to(probed_at - timedelta(seconds=1))
        not_yet = job()["probed"]
        clock.move_to(probed_at)
        probed = job()["probed"]

    assert (not_yet, probed) == (0, 1)
    assert delivery.next_attempt_at < probed_at + timedelta(minutes=30)  # what was planned
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == probed_at + timedelta(hours=6)
    assert (delivery.attempt_count, delivery.early_failures, delivery.planned_attempt_at) == (4, 1, None)
    assert [a.early for a in delivery.attempts.all()] == [False, False, False, True]


def test_a_short_failure_streak_brings_nothing_forward_an_outage_does(endpoint, receiver, record, deliver):
    receiver.script(500)

    with time_machine.travel(T0, tick=False) as clock:
        failed = record(endpoint.project, "invoice.created")
        retry_at = Delivery.objects.get(event=failed).next_attempt_at
        clock.move_to(T0 + timedelta(seconds=1))
        record(endpoint.project, "invoice.paid")  # succeeds after a 1-second streak
        unchanged = Delivery.objects.get(event=failed).next_attempt_at

        for _ in range(2):  # the retries after 5 s and 5 min fail: a streak from the first of them
            clock.move_to(Delivery.objects.get(event=failed).next_attempt_at)
            receiver.script(500)
            deliver()
        streak_from = Delivery.objects.get(event=failed).attempts.get(number=2).started_at
        planned = Delivery.objects.get(event=failed).next_attempt_at  # 30 minutes later
        clock.move_to(streak_from + CATCH_UP_AFTER)
        record(endpoint.project, "customer.created")  # succeeds after a 10-minute streak

    assert unchanged == retry_at
    waiting = Delivery.objects.get(event=failed)
    assert planned > streak_from + CATCH_UP_AFTER
    assert (waiting.next_attempt_at, waiting.planned_attempt_at) == (streak_from + CATCH_UP_AFTER, planned)


def test_six_days_down_disabled_by_the_job_then_recover_delivers_the_backlog_once(
    loopback_api, endpoint, receiver, record, job, mailoutbox, django_capture_on_commit_callbacks
):
    project = endpoint.project
    MembershipFactory(project=project, role=Role.OWNER, user__email="owner@acme.test", user__password=None)
    api = loopback_api
    back_at = T0 + timedelta(days=6)
    receiver.default = lambda: Reply(503 if timezone.now() < back_at else 200)
    hourly = timedelta(hours=1)

    with time_machine.travel(T0, tick=False) as clock:
        first = record(project, "invoice.created")
        totals = _drive(clock, job, until=T0 + timedelta(hours=12), every=hourly)
        clock.move_to(T0 + timedelta(hours=12))
        second = record(project, "invoice.finalized")
        totals += _drive(clock, job, until=T0 + timedelta(days=1), every=hourly)
        clock.move_to(T0 + timedelta(days=1))
        third = record(project, "invoice.paid")
        # No event after this one: every delivery has given up (three days of retries) well before
        # the fifth day, so no attempt is left to see the 5-day rule; the job applies it.
        totals += _drive(clock, job, until=back_at, every=hourly)
        last_attempt = DeliveryAttempt.objects.aggregate(at=Max("started_at"))["at"]
        endpoint.refresh_from_db()
        assert (endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at) == (
            False,
            "failing",
            T0 + timedelta(days=5),
        )

        clock.move_to(back_at)
        enabled = api.patch(f"/v1/webhook-endpoints/{endpoint.public_id}", {"enabled": True}, format="json")
        url = f"/v1/webhook-endpoints/{endpoint.public_id}/recover"
        with django_capture_on_commit_callbacks(execute=True):
            recovered = api.post(url, {"since": "2026-03-02T09:00:00Z"}, format="json")
        delivered = receiver.delivered()
        for minute in range(1, 6):
            clock.move_to(back_at + timedelta(minutes=minute))
            job()
        with django_capture_on_commit_callbacks(execute=True):
            again = api.post(url, {"since": "2026-03-02T09:00:00Z"}, format="json")

    assert last_attempt < T0 + timedelta(days=5)
    assert (totals["disabled"], totals["errors"]) == (1, 0)
    [email] = mailoutbox
    assert email.to == ["owner@acme.test"]
    assert "Reason:   No successful delivery for 5 days" in email.body
    entry = AuditLogEntry.objects.get(action="webhook_endpoint.disabled")
    assert (entry.actor_label, entry.object_id, entry.changes) == (
        "system",
        endpoint.public_id,
        {"reason": "failing"},
    )
    assert enabled.json()["enabled"] is True
    assert (recovered.status_code, recovered.json()) == (202, {"queued": 3, "has_more": False})
    assert (again.status_code, again.json()) == (202, {"queued": 0, "has_more": False})
    assert delivered == [first.public_id, second.public_id, third.public_id]
    assert receiver.delivered() == delivered
    assert receiver.all_verified()
    redeliveries = Delivery.objects.filter(is_redelivery=True).order_by("id")
    assert [(d.event_id, d.status, d.attempt_count) for d in redeliveries] == [
        (event.pk, DeliveryStatus.SUCCEEDED, 1) for event in (first, second, third)
    ]
    assert set(Delivery.objects.filter(is_redelivery=False).values_list("status", flat=True)) == {"failed"}
    recovery = AuditLogEntry.objects.get(action="webhook_endpoint.recovered")
    assert (recovery.object_id, recovery.changes) == (
        endpoint.public_id,
        {"since": "2026-03-02T09:00:00Z", "queued": 3},
    )


# --- `recover` through the API -------------------------------------------------------------------


def _recover(api, endpoint, body):
    return api.post(f"/v1/webhook-endpoints/{endpoint.public_id}/recover", body, format="json")


def _error(response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def test_recover_resends_only_what_failed_once_and_a_second_call_sends_nothing(
    loopback_api, endpoint, receiver, record, django_capture_on_commit_callbacks
):
    project = endpoint.project
    api = loopback_api
    endpoint_url = f"/v1/webhook-endpoints/{endpoint.public_id}"

    with time_machine.travel(T0, tick=False) as clock:
        receiver.script(500)
        before = record(project)  # failed, but before `since`
        clock.move_to(T0 + timedelta(hours=1))
        receiver.script(200, 500, 500, 500, 500)
        sent = record(project)
        failed_a = record(project)
        failed_b = record(project)
        retried = record(project)
        with django_capture_on_commit_callbacks(execute=True):
            api.post(f"{endpoint_url}/redeliver", {"event": retried.public_id}, format="json")  # 500
        api.patch(endpoint_url, {"enabled": False}, format="json")  # fails what was pending
        missed = record(project)  # while disabled: no delivery to this endpoint at all
        api.patch(endpoint_url, {"enabled": True}, format="json")
        receiver.script(500)
        pending = record(project)  # still retrying
        requests_before = len(receiver.requests)

        clock.move_to(T0 + timedelta(hours=2))
        with django_capture_on_commit_callbacks(execute=True):
            first = _recover(api, endpoint, {"since": "2026-03-02T10:00:00+00:00"})
        with django_capture_on_commit_callbacks(execute=True):
            second = _recover(api, endpoint, {"since": "2026-03-02T10:00:00"})  # naive: UTC

    assert (first.status_code, first.json()) == (202, {"queued": 3, "has_more": False})
    assert (second.status_code, second.json()) == (202, {"queued": 0, "has_more": False})
    # `retried` failed twice (its delivery and a redelivery): it is sent once.
    assert receiver.ids()[requests_before:] == [failed_a.public_id, failed_b.public_id, retried.public_id]
    assert receiver.all_verified()
    recovered = Delivery.objects.filter(is_redelivery=True, status=DeliveryStatus.SUCCEEDED)
    assert sorted(recovered.values_list("event_id", flat=True)) == [failed_a.pk, failed_b.pk, retried.pk]
    assert not Delivery.objects.filter(event__in=[missed]).exists()
    assert Delivery.objects.get(event=pending).status == DeliveryStatus.PENDING
    assert Delivery.objects.filter(event__in=[before, sent]).count() == 2
    assert AuditLogEntry.objects.filter(action="webhook_endpoint.recovered").count() == 1


def test_recover_queues_at_most_the_limit_and_the_next_call_carries_on(project, api, monkeypatch):
    endpoint = make_endpoint(project)
    with time_machine.travel(T0, tick=False):
        events = [record_event(project) for _ in range(3)]
        Delivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        monkeypatch.setattr(services, "RECOVER_LIMIT", 2)

        replies = [_recover(api, endpoint, {"since": "2026-03-02T09:00:00Z"}).json() for _ in range(3)]

    assert replies == [
        {"queued": 2, "has_more": True},
        {"queued": 1, "has_more": False},
        {"queued": 0, "has_more": False},
    ]
    recovered = Delivery.objects.filter(is_redelivery=True).order_by("id")
    assert list(recovered.values_list("event_id", flat=True)) == [event.pk for event in events]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"since": "2026-03-02T09:01:00Z"}, (422, "since_in_future", "since")),
        # 14 days and 5 minutes ago, and a second more
        ({"since": "2026-02-16T08:54:59Z"}, (422, "since_too_old", "since")),
        ({"since": "yesterday"}, (400, "invalid_datetime", "since")),
        ({}, (400, "required", "since")),
        ({"since": "2026-03-01T09:00:00Z", "until": "2026-03-02T09:00:00Z"}, (400, "unknown_field", "until")),
    ],
)
def test_a_bad_since_is_refused_and_changes_nothing(project, api, body, expected):
    endpoint = make_endpoint(project)
    with time_machine.travel(T0, tick=False):
        record_event(project)
        Delivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)

        response = _recover(api, endpoint, body)

    assert _error(response) == expected
    assert Delivery.objects.count() == 1
    assert not AuditLogEntry.objects.filter(action="webhook_endpoint.recovered").exists()


def test_since_may_go_back_14_days_and_5_minutes(project, api):
    endpoint = make_endpoint(project)
    with time_machine.travel(T0, tick=False):
        response = _recover(api, endpoint, {"since": "2026-02-16T08:55:00Z"})

    assert (response.status_code, response.json()) == (202, {"queued": 0, "has_more": False})


def test_recover_on_a_disabled_endpoint_is_refused_and_changes_nothing(project, api):
    endpoint = make_endpoint(project)
    record_event(project)
    api.patch(f"/v1/webhook-endpoints/{endpoint.public_id}", {"enabled": False}, format="json")

    response = _recover(api, endpoint, {"since": timezone.now().isoformat()})

    assert _error(response) == (422, "endpoint_disabled", None)
    assert response.json()["error"]["requested"] == "recover"
    assert Delivery.objects.count() == 1


def test_recover_on_another_projects_endpoint_is_404_and_changes_nothing(project, other_project, api):
    theirs = make_endpoint(other_project)
    record_event(other_project)
    Delivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)

    response = _recover(api, theirs, {"since": (timezone.now() - timedelta(days=1)).isoformat()})

    assert _error(response) == (404, "not_found", None)
    assert not Delivery.objects.filter(is_redelivery=True).exists()


def test_a_read_only_key_cannot_recover(project):
    endpoint = make_endpoint(project)
    record_event(project)
    Delivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    reader = api_client(project, [Scope.BILLING_READ])

    response = _recover(reader, endpoint, {"since": (timezone.now() - timedelta(days=1)).isoformat()})

    assert _error(response)[:2] == (403, "insufficient_scope")
    assert not Delivery.objects.filter(is_redelivery=True).exists()
    assert not AuditLogEntry.objects.filter(action="webhook_endpoint.recovered").exists()


def test_the_schema_documents_recover(client):
    operation = client.get("/v1/openapi.json").json()["paths"]["/v1/webhook-endpoints/{id}/recover"]["post"]

    assert operation["summary"] == "Recover failed deliveries since a time"
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request == {"$ref": "#/components/schemas/RecoverRequest"}
    response = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert response == {"$ref": "#/components/schemas/Recovery"}
    components = client.get("/v1/openapi.json").json()["components"]["schemas"]
    assert components["RecoverRequest"]["required"] == ["since"]
    assert {"format": "date-time"} in components["RecoverRequest"]["properties"]["since"]["anyOf"]
    assert sorted(components["Recovery"]["required"]) == ["has_more", "queued"]
