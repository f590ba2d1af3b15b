"""Several `deliver_webhooks` processes at once, on PostgreSQL with real connections."""

import io
import threading
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection
from django_q.conf import Conf

from tests.webhooks.conftest import Reply
from tests.webhooks.factories import make_endpoint, record_event
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus

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
