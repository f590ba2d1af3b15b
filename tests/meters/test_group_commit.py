"""Group commit (meters/group_commit.py): single events sent at once by threads of one process
share one insert and one commit, and each is answered as if it had been sent alone. On
PostgreSQL with real threads, each with its own connection; the committer's own rules without a
database."""

import threading
from decimal import Decimal

import httpx
import pytest
from django.db import DataError, connection, transaction
from django.db.models import Sum

from accounts.models import Project, Scope
from meters import group_commit, services
from meters.models import UsageEvent, UsageRollup
from tests.accounts.factories import make_api_key
from webhooks.models import Event

THREADS = 8


def _event(key: str | None, value: int = 1) -> dict:
    event = {"customer": "cus_8fq", "meter": "api_calls", "value": value}
    if key is not None:
        event["idempotency_key"] = key
    return event


@pytest.fixture
def gathered(monkeypatch, settings):
    """Every single-event request of `runs` threads prepared before any hands its rows over, so
    that all of them are announced to the first (the leader), which waits for them: one group,
    whatever the scheduling."""
    settings.USAGE_GROUP_COMMIT_WINDOW_MS = 5000

    def arm(runs: int) -> None:
        barrier = threading.Barrier(runs)
        prepare = services._prepare

        def prepared_together(*args):
            outcome = prepare(*args)
            barrier.wait(timeout=10)
            return outcome

        monkeypatch.setattr(services, "_prepare", prepared_together)

    return arm


def _in_threads(project, bodies: list[dict]) -> list:
    """usage_ingest for each body in its own thread (own connection): the outcome or the
    exception of each, in the bodies' order."""
    answers: list = [None] * len(bodies)

    def run(index: int) -> None:
        try:
            answers[index] = services.usage_ingest(project=project, events=[bodies[index]])
        except Exception as error:
            answers[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def _written() -> tuple[int, int]:
    committer = group_commit.committer()
    return committer.groups, committer.items


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_single_events_share_one_insert_and_one_commit(project, subscription, gathered):
    gathered(THREADS)
    groups, items = _written()

    answers = _in_threads(project, [_event(f"k-{n}", value=n + 1) for n in range(THREADS)])

    assert _written() == (groups + 1, items + THREADS)
    for n, outcome in enumerate(answers):
        assert (outcome.accepted, outcome.duplicates, outcome.rejected) == (1, 0, 0)
        [result] = outcome.results
        assert result["status"] == "accepted"
        event = UsageEvent.objects.get(public_id=result["id"])
        assert (event.idempotency_key, event.value, event.subscription_id) == (
            f"k-{n}",
            Decimal(n + 1),
            subscription.pk,
        )
    assert UsageEvent.objects.count() == THREADS
    total = sum(range(1, THREADS + 1))
    assert UsageRollup.objects.aggregate(total=Sum("value_sum"))["total"] == total
    assert UsageRollup.objects.aggregate(count=Sum("event_count"))["count"] == THREADS
    # One usage.recorded per request, naming its own event, as without group commit.
    recorded = sorted(tuple(event.data["events"]) for event in Event.objects.filter(type="usage.recorded"))
    assert recorded == sorted((outcome.results[0]["id"],) for outcome in answers)
    subscription.refresh_from_db()
    assert subscription.draft_stale is True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_key_sent_twice_in_a_group_is_stored_once_and_a_key_stored_before_is_a_duplicate(
    project, subscription, gathered
):
    [earlier] = services.usage_ingest(project=project, events=[_event("k-old", value=7)]).results
    gathered(4)
    groups, _ = _written()

    answers = _in_threads(
        project, [_event("k-same", 2), _event("k-same", 3), _event("k-old", 9), _event("k-new", 4)]
    )

    assert _written()[0] == groups + 1
    same = [answers[0].results[0], answers[1].results[0]]
    stored = UsageEvent.objects.get(idempotency_key="k-same")
    assert sorted(result["status"] for result in same) == ["accepted", "duplicate"]
    assert {result["id"] for result in same} == {stored.public_id}
    winner = same[0] if same[0]["status"] == "accepted" else same[1]
    assert stored.value == (Decimal(2) if winner is same[0] else Decimal(3))
    assert answers[2].results[0] == {"index": 0, "status": "duplicate", "id": earlier["id"]}
    assert answers[3].results[0]["status"] == "accepted"
    assert UsageEvent.objects.count() == 3
    assert UsageEvent.objects.get(idempotency_key="k-old").value == 7
    assert UsageRollup.objects.aggregate(total=Sum("value_sum"))["total"] == 7 + stored.value + 4
    # Duplicates record nothing: one usage.recorded for the first request and one per stored event.
    assert Event.objects.filter(type="usage.recorded").count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_unmatched_events_in_a_group_are_answered_and_announced_per_request(project, subscription, gathered):
    gathered(3)

    answers = _in_threads(
        project, [_event("k-1"), {**_event("k-2"), "customer": "cus_nobody"}, _event("k-3")]
    )

    assert [outcome.results[0]["status"] for outcome in answers] == ["accepted", "unmatched", "accepted"]
    assert answers[1].results[0]["code"] == "unknown_customer"
    [unmatched] = Event.objects.filter(type="usage.unmatched")
    assert unmatched.data["events"][0]["id"] == answers[1].results[0]["id"]
    assert unmatched.data["events"][0]["customer"] == "cus_nobody"
    assert Event.objects.filter(type="usage.recorded").count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failing_group_stores_nothing_twice_and_its_events_are_written_alone(
    project, subscription, gathered, monkeypatch
):
    """The group's insert goes in, then the transaction fails on one poison event: it rolls back,
    and each request writes alone; only the poison one fails, its neighbours are accepted."""
    gathered(4)
    groups, _ = _written()
    insert = services.events_insert

    def insert_then_fail(**kwargs):
        outcome = insert(**kwargs)
        if any(row.idempotency_key == "poison" for row in kwargs["rows"]):
            raise DataError("the database refuses the poison event")
        return outcome

    monkeypatch.setattr(services, "events_insert", insert_then_fail)

    answers = _in_threads(project, [_event("k-1", 1), _event("poison", 5), _event(None, 2), _event("k-3", 3)])

    assert _written()[0] == groups  # the group never committed
    assert isinstance(answers[1], DataError)
    for outcome in (answers[0], answers[2], answers[3]):
        assert outcome.results[0]["status"] == "accepted"
    assert sorted(UsageEvent.objects.values_list("public_id", flat=True)) == sorted(
        answers[n].results[0]["id"] for n in (0, 2, 3)
    )
    assert UsageRollup.objects.aggregate(total=Sum("value_sum"))["total"] == 6
    assert Event.objects.filter(type="usage.recorded").count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_single_events_posted_at_once_over_http_share_commits(live_server, project, subscription, gathered):
    Project.objects.filter(pk=project.pk).update(ingest_rate_limit_per_minute=10**9)
    _, secret = make_api_key(project, [Scope.USAGE_WRITE])
    gathered(THREADS)
    groups, items = _written()
    answers: list = [None] * THREADS

    def client(n: int) -> None:
        with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {secret}"}) as http:
            answers[n] = http.post("/v1/usage", json=_event(f"k-{n}", n + 1))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert _written() == (groups + 1, items + THREADS)
    for n, response in enumerate(answers):
        assert response.status_code == 200
        body = response.json()
        assert (body["accepted"], body["results"][0]["status"]) == (1, "accepted")
        assert UsageEvent.objects.get(public_id=body["results"][0]["id"]).idempotency_key == f"k-{n}"
    assert UsageEvent.objects.count() == THREADS


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_requests_with_an_idempotency_key_header_or_several_events_are_written_alone(
    live_server, project, subscription
):
    Project.objects.filter(pk=project.pk).update(ingest_rate_limit_per_minute=10**9)
    _, secret = make_api_key(project, [Scope.USAGE_WRITE])
    groups, _ = _written()

    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {secret}"}) as http:
        keyed = http.post("/v1/usage", json=_event("k-1"), headers={"Idempotency-Key": "req-1"})
        batch = http.post("/v1/usage", json=[_event("k-2"), _event("k-3")])
        with transaction.atomic():
            inside = services.usage_ingest(project=project, events=[_event("k-4")])

    assert (keyed.status_code, batch.status_code) == (200, 200)
    assert inside.accepted == 1
    assert _written()[0] == groups
    assert UsageEvent.objects.count() == 4


# --- the committer alone ----------------------------------------------------------------------


def _submit_in_thread(committer, item, write, answers: dict) -> threading.Thread:
    def run() -> None:
        try:
            answers[item] = committer.submit(item, write)
        except Exception as error:
            answers[item] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_lone_item_is_written_at_once_without_waiting_for_the_window(settings):
    settings.USAGE_GROUP_COMMIT_WINDOW_MS = 60_000  # would hang the test if the leader waited
    committer = group_commit.Committer()
    committer.announce()

    assert committer.submit("a", lambda items: [item.upper() for item in items]) == "A"
    assert (committer.groups, committer.items) == (1, 1)


def test_the_leader_waits_for_announced_items_and_a_full_group_closes(settings):
    settings.USAGE_GROUP_COMMIT_WINDOW_MS = 60_000
    settings.USAGE_GROUP_COMMIT_MAX_EVENTS = 3
    committer = group_commit.Committer()
    written: list[list[str]] = []

    def write(items):
        written.append(list(items))
        return [item.upper() for item in items]

    for _ in range(4):
        committer.announce()
    answers: dict = {}
    threads = [_submit_in_thread(committer, item, write, answers) for item in "abc"]
    for thread in threads:
        thread.join(timeout=10)
    # The fourth announced item never came: the group closed at three, the leader did not wait.
    committer.withdraw()

    assert answers == {"a": "A", "b": "B", "c": "C"}
    assert [sorted(items) for items in written] == [["a", "b", "c"]]
    assert (committer.groups, committer.items) == (1, 3)


def test_items_handed_over_while_a_group_is_written_form_the_next_group(settings):
    settings.USAGE_GROUP_COMMIT_WINDOW_MS = 60_000
    committer = group_commit.Committer()
    writing, release = threading.Event(), threading.Event()
    written: list[list[str]] = []

    def write(items):
        written.append(sorted(items))
        if items == ["a"]:
            writing.set()
            release.wait(timeout=30)
        return [item.upper() for item in items]

    answers: dict = {}
    committer.announce()
    first = _submit_in_thread(committer, "a", write, answers)  # alone: written at once
    writing.wait(timeout=10)
    committer.announce()
    committer.announce()
    others = [_submit_in_thread(committer, item, write, answers) for item in "bc"]
    while committer._open is None or len(committer._open) < 2:  # both wait for "a"'s write
        writing.wait(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(timeout=10)

    assert answers == {"a": "A", "b": "B", "c": "C"}
    assert written == [["a"], ["b", "c"]]
    assert (committer.groups, committer.items) == (2, 3)


def test_every_item_of_a_failed_group_gets_group_failed(settings):
    settings.USAGE_GROUP_COMMIT_WINDOW_MS = 60_000
    committer = group_commit.Committer()

    def write(items):
        raise DataError("refused")

    committer.announce()
    committer.announce()
    answers: dict = {}
    threads = [_submit_in_thread(committer, item, write, answers) for item in "ab"]
    for thread in threads:
        thread.join(timeout=10)

    assert {item: type(answer) for item, answer in answers.items()} == {
        "a": group_commit.GroupFailed,
        "b": group_commit.GroupFailed,
    }
    assert (committer.groups, committer.items) == (0, 0)


def test_a_follower_waits_for_a_slow_leader_and_gets_its_own_outcome(settings):
    """No follower gives up on its group: answering an error while the leader may still commit
    would let a client's retry store the event twice (an event without an idempotency key)."""
    settings.USAGE_GROUP_COMMIT_WINDOW_MS = 60_000
    committer = group_commit.Committer()
    release = threading.Event()
    leading = threading.Event()

    def write(items):
        leading.set()
        release.wait(timeout=30)
        return [item.upper() for item in items]

    committer.announce()
    committer.announce()
    answers: dict = {}
    leader = _submit_in_thread(committer, "a", write, answers)
    while committer._open is None:  # "a" leads the group "b" joins
        leading.wait(0.001)
    follower = _submit_in_thread(committer, "b", write, answers)
    follower.join(timeout=1)
    still_waiting = follower.is_alive()
    release.set()
    leader.join(timeout=10)
    follower.join(timeout=10)

    assert still_waiting
    assert answers == {"a": "A", "b": "B"}


def test_a_forked_process_makes_its_own_committer(monkeypatch):
    parent = group_commit.committer()
    assert group_commit.committer() is parent
    monkeypatch.setattr(group_commit.os, "getpid", lambda: -1)

    assert group_commit.committer() is not parent


@pytest.mark.django_db(transaction=True)
def test_group_commit_applies_on_postgresql_outside_a_transaction_when_enabled(settings):
    assert group_commit.applies() is (connection.vendor == "postgresql")
    with transaction.atomic():
        assert group_commit.applies() is False
    settings.USAGE_GROUP_COMMIT_WINDOW_MS = 0
    assert group_commit.applies() is False
