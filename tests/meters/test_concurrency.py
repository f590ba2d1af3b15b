"""50 clients race to send the same 10,000 events, as single events and in batches, each event at
least twice: every key must be stored exactly once, on PostgreSQL with real connections."""

import random
import threading
import time
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from accounts.models import Project, Scope
from meters.models import UsageEvent, UsageRollup
from tests.accounts.factories import make_api_key
from webhooks.models import Event

CLIENTS = 50
EVENTS = 10_000
SINGLES = 600


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_clients_sending_the_same_events_store_each_exactly_once(live_server, project, subscription):
    Project.objects.filter(pk=project.pk).update(ingest_rate_limit_per_minute=10**9)
    _, secret = make_api_key(project, [Scope.USAGE_WRITE])
    shuffle = random.Random(20260115)
    events = [
        {
            "customer": "cus_8fq",
            "meter": "api_calls",
            "value": shuffle.randint(1, 100),
            "idempotency_key": f"k-{n}",
        }
        for n in range(EVENTS)
    ]
    # Every event twice, a tenth of them three times; some alone, the rest in batches of 50 to 400
    # (which may hold the same key twice), all shuffled.
    sends = events * 2 + shuffle.sample(events, EVENTS // 10)
    shuffle.shuffle(sends)
    requests = [sends[n] for n in range(SINGLES)]
    rest = sends[SINGLES:]
    while rest:
        size = shuffle.randint(50, 400)
        requests.append(rest[:size])
        rest = rest[size:]
    shuffle.shuffle(requests)

    statuses, accepted, duplicates = Counter(), Counter(), Counter()
    barrier = threading.Barrier(CLIENTS)

    def client(share: list) -> None:
        with httpx.Client(
            base_url=live_server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=120
        ) as http:
            _connect(http)
            barrier.wait()
            for body in share:
                response = http.post("/v1/usage", json=body)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    accepted["all"] += response.json()["accepted"]
                    duplicates["all"] += response.json()["duplicates"]

    threads = [threading.Thread(target=client, args=(requests[k::CLIENTS],)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == Counter({200: len(requests)})
    assert accepted["all"] == EVENTS
    assert duplicates["all"] == len(sends) - EVENTS
    assert UsageEvent.objects.count() == EVENTS
    total = Decimal(sum(event["value"] for event in events))
    assert UsageEvent.objects.aggregate(total=Sum("value"))["total"] == total
    assert UsageRollup.objects.aggregate(total=Sum("value_sum"))["total"] == total
    assert UsageRollup.objects.aggregate(count=Sum("event_count"))["count"] == EVENTS
    recorded = Event.objects.filter(type="usage.recorded")
    assert sum(len(event.data["events"]) for event in recorded) == EVENTS


def _connect(http: httpx.Client) -> None:
    """Open the keep-alive connection before the race: the test server's listen backlog is small,
    and fifty simultaneous connects would be refused, not raced."""
    for attempt in range(100):
        try:
            http.get("/healthz")
            return
        except httpx.TransportError:
            time.sleep(0.01 * attempt)
    raise AssertionError("could not connect to the test server")
