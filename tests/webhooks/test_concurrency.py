"""Several `deliver_webhooks` processes (and `recover` calls) at once, on PostgreSQL with real
connections."""

import io
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from accounts.models import AuditLogEntry
from tests.concurrency import all_at_once
from tests.webhooks.conftest import Reply
from tests.webhooks.factories import make_endpoint, record_event
from webhooks import services
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint

RUNS = 4
EVENTS = 60


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_send_each_attempt_exactly_once(loopback_project, receiver, monkeypatch):
    endpoint = make_endpoint(loopback_project, url=receiver.url)
    receiver.secret = endpoint.secret
    receiver.default = Reply(200, delay=0.002)
    monkeypatch.setattr(Conf, "SYNC", False)  # first attempts stay queued: every delivery is due
    events = [record_event(loopback_project, "usage.recorded", {"n": n}) for n in range(EVENTS)]
    start = threading.Barrier(RUNS)
    outputs: list[str] = []

    def run() -> None:
        try:
            out = io.StringIO()
            start.wait(timeout=10)
            call_command("deliver_webhooks", stdout=out)
            outputs.append(out.getvalue())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(RUNS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outputs) == RUNS
    assert Counter(receiver.ids()) == Counter({event.public_id: 1 for event in events})
    assert receiver.all_verified()
    assert DeliveryAttempt.objects.count() == EVENTS
    assert set(Delivery.objects.values_list("status", "attempt_count")) == {(DeliveryStatus.SUCCEEDED, 1)}
    attempted = [int(output.split()[1].rstrip(":")) for output in outputs]
    assert sum(attempted) == EVENTS


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_checks_disable_once_and_probe_once(loopback_project, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", False)  # nothing is sent: the emails and attempts stay queued
    now = timezone.now()
    gone_quiet = make_endpoint(loopback_project, url="http://127.0.0.1:9/quiet")
    failing = [make_endpoint(loopback_project, url=f"http://127.0.0.1:9/{n}") for n in range(3)]
    for _ in range(5):
        record_event(loopback_project)
    # Every endpoint failing with its deliveries' retries hours away, none tried for 20 minutes; the
    # first one for 6 days (its deliveries gave up long ago), the others for an hour.
    Delivery.objects.exclude(endpoint=gone_quiet).update(
        next_attempt_at=now + timedelta(hours=5), last_attempt_at=now - timedelta(minutes=20), attempt_count=4
    )
    Delivery.objects.filter(endpoint=gone_quiet).update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    WebhookEndpoint.objects.filter(pk=gone_quiet.pk).update(failing_since=now - timedelta(days=6))
    WebhookEndpoint.objects.exclude(pk=gone_quiet.pk).update(failing_since=now - timedelta(hours=1))

    results = all_at_once(services.webhook_failing_endpoints_check, RUNS)

    assert sum(result.disabled for result in results) == 1
    assert sum(result.probed for result in results) == 3
    assert AuditLogEntry.objects.filter(action="webhook_endpoint.disabled").count() == 1
    queued = [task.func() for task in OrmQ.objects.all()]
    assert queued.count("webhooks.tasks.notify_endpoint_disabled") == 1  # one email
    # Each failing endpoint's oldest delivery, brought forward once; the others untouched.
    probes = Delivery.objects.filter(planned_attempt_at=now + timedelta(hours=5))
    oldest = [endpoint.deliveries.order_by("event_id").first().pk for endpoint in failing]
    assert sorted(probes.values_list("pk", flat=True)) == sorted(oldest)
    untouched = Delivery.objects.filter(endpoint__in=failing, next_attempt_at=now + timedelta(hours=5))
    assert untouched.count() == 3 * 5 - 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_recovers_queue_each_event_once(loopback_project, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", False)
    endpoint = make_endpoint(loopback_project, url="http://127.0.0.1:9/hooks")
    events = [record_event(loopback_project) for _ in range(EVENTS)]
    Delivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    since = timezone.now() - timedelta(hours=1)

    results = all_at_once(
        lambda: services.webhook_endpoint_recover(endpoint=endpoint, since=since, actor=None).queued, RUNS
    )

    assert sorted(results) == [0] * (RUNS - 1) + [EVENTS]
    redelivered = Delivery.objects.filter(is_redelivery=True)
    assert Counter(redelivered.values_list("event_id", flat=True)) == Counter({e.pk: 1 for e in events})
    assert AuditLogEntry.objects.filter(action="webhook_endpoint.recovered").count() == 1
