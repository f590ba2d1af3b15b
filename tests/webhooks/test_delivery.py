"""Deliveries to a real HTTP receiver on loopback, with the clock frozen and moved by hand."""

import base64
import hashlib
import hmac
import io
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise

import pytest
import time_machine
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from django_q.conf import Conf
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from accounts.models import AuditLogEntry, Role
from billing_site.schedules import JOBS, Job
from tests.accounts.factories import MembershipFactory
from tests.webhooks.conftest import Reply
from tests.webhooks.factories import make_endpoint, record_event
from webhooks import signing
from webhooks.models import Delivery, DeliveryStatus, DisabledReason, WebhookEndpoint
from webhooks.retries import RETRY_DELAYS, RETRY_JITTER
from webhooks.services import webhook_endpoint_rotate_secret, webhook_endpoint_update
from webhooks.tasks import deliver_due_webhooks

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOTHING_DUE = (
    "attempted 0: succeeded 0, rescheduled 0, failed 0; cancelled 0 (endpoint disabled), "
    "skipped 0 (taken by another worker), errors 0 (see the log), left 0 (time budget); "
    "failing endpoints: disabled 0, probed 0"
)


def _summary(*, succeeded=0, rescheduled=0, failed=0, cancelled=0) -> str:
    return (
        f"attempted {succeeded + rescheduled + failed}: succeeded {succeeded}, rescheduled {rescheduled}, "
        f"failed {failed}; cancelled {cancelled} (endpoint disabled), "
        "skipped 0 (taken by another worker), errors 0 (see the log), left 0 (time budget); "
        "failing endpoints: disabled 0, probed 0"
    )


@pytest.fixture
def endpoint(loopback_project, receiver) -> WebhookEndpoint:
    endpoint = make_endpoint(loopback_project, url=receiver.url)
    receiver.secret = endpoint.secret
    return endpoint


def _member(project, role: Role, email: str) -> None:
    # No usable password: hashing one is the slowest step of a test.
    MembershipFactory(project=project, role=role, user__email=email, user__password=None)


def _attempts(delivery: Delivery) -> list[tuple[int | None, bool]]:
    return list(delivery.attempts.values_list("status_code", "succeeded"))


def _run_until_settled(clock, deliver, *, limit: int = 60) -> int:
    """Move the clock to each next due attempt and run the scheduled command, as cron would."""
    runs = 0
    while (
        due := Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by("next_attempt_at").first()
    ) is not None:
        clock.move_to(due.next_attempt_at)
        deliver()
        runs += 1
        assert runs < limit
    return runs


def test_a_delivery_is_signed_as_standard_webhooks_and_verifies(endpoint, receiver, record):
    with time_machine.travel(T0, tick=False):
        event = record(endpoint.project, "invoice.paid", {"id": "in_1", "total": {"amount": 12550}})

    [got] = receiver.requests
    assert got.verify_error == ""
    assert got.payload == {
        "type": "invoice.paid",
        "timestamp": "2026-03-02T09:00:00Z",
        "data": {"id": "in_1", "total": {"amount": 12550}},
    }
    assert got.path == "/hooks"
    assert got.headers["webhook-id"] == event.public_id
    assert got.headers["webhook-timestamp"] == str(int(T0.timestamp()))
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "Billable-Webhooks/1"
    # The signature, recomputed from the specification rather than by the library.
    key = base64.b64decode(endpoint.secret.removeprefix("whsec_"))
    signed = f"{event.public_id}.{int(T0.timestamp())}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert got.headers["webhook-signature"] == f"v1,{expected}"
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == ("succeeded", 1, None)
    assert delivery.succeeded_at == T0
    attempt = delivery.attempts.get()
    assert (attempt.number, attempt.status_code, attempt.succeeded, attempt.response_body, attempt.error) == (
        1,
        200,
        True,
        "ok",
        "",
    )
    assert attempt.url == receiver.url


def test_500_then_200_is_delivered_once_with_the_same_webhook_id(endpoint, receiver, record, deliver):
    receiver.script(500, 200)

    with time_machine.travel(T0, tick=False) as clock:
        event = record(endpoint.project)
        delivery = Delivery.objects.get()
        assert delivery.status == DeliveryStatus.PENDING
        assert T0 + timedelta(seconds=4.5) <= delivery.next_attempt_at <= T0 + timedelta(seconds=5.5)
        assert deliver() == NOTHING_DUE  # not due yet
        clock.move_to(delivery.next_attempt_at)
        summary = deliver()

    assert summary == _summary(succeeded=1)
    assert receiver.ids() == [event.public_id, event.public_id]
    assert receiver.all_verified()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.last_status_code) == ("succeeded", 2, 200)
    assert _attempts(delivery) == [(500, False), (200, True)]
    assert deliver() == NOTHING_DUE


def _on_schedule(starts: list[datetime]) -> bool:
    """Each gap between these attempts is the schedule's step, give or take the jitter."""
    return all(
        RETRY_DELAYS[step] * (1 - RETRY_JITTER) <= after - before <= RETRY_DELAYS[step] * (1 + RETRY_JITTER)
        for step, (before, after) in enumerate(pairwise(starts))
    )


def test_a_receiver_down_for_24_hours_gets_retries_on_the_schedule_then_the_rest_with_the_first_success(
    endpoint, receiver, record, deliver
):
    back_at = T0 + timedelta(hours=24)
    receiver.default = lambda: Reply(503 if timezone.now() < back_at else 200)

    with time_machine.travel(T0, tick=False) as clock:
        first = record(endpoint.project, "invoice.created")
        clock.move_to(T0 + timedelta(hours=12))
        second = record(endpoint.project, "invoice.finalized")
        _run_until_settled(clock, deliver)

    assert receiver.all_verified()
    assert receiver.delivered() in ([first.public_id, second.public_id], [second.public_id, first.public_id])
    # Attempts on the schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, …, each ±10 %) until one lands
    # after the receiver is back: 8 for the first event, 7 for the one recorded 12 hours later.
    deliveries = [Delivery.objects.get(event=first), Delivery.objects.get(event=second)]
    for delivery, count in zip(deliveries, (8, 7), strict=True):
        assert delivery.status == DeliveryStatus.SUCCEEDED
        assert _attempts(delivery) == [(503, False)] * (count - 1) + [(200, True)]
        starts = list(delivery.attempts.values_list("started_at", flat=True))
        assert starts[0] == delivery.event.created_at
        assert _on_schedule(starts[:-1])
        assert starts[-2] < back_at <= starts[-1]
    # The first retry after the receiver is back succeeds and ends an outage of hours: the other
    # delivery is brought forward and sent at once, early, instead of hours later on its schedule.
    finals = [delivery.attempts.last() for delivery in deliveries]
    [on_time] = [final for final in finals if not final.early]
    [early] = [final for final in finals if final.early]
    assert early.started_at == on_time.started_at
    assert _on_schedule(list(on_time.delivery.attempts.values_list("started_at", flat=True)))
    assert [delivery.early_failures for delivery in deliveries] == [0, 0]
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.failing_since) == (True, None)


def test_410_disables_the_endpoint_fails_what_is_pending_and_emails_the_owners(
    endpoint, receiver, record, deliver, mailoutbox
):
    project = endpoint.project
    _member(project, Role.OWNER, "owner@acme.test")
    _member(project, Role.BILLING_ADMIN, "billing@acme.test")
    receiver.script(500, 410)

    with time_machine.travel(T0, tick=False) as clock:
        retrying = record(project, "invoice.created")
        gone = record(project, "invoice.paid")
        clock.shift(timedelta(hours=1))
        later = record(project, "invoice.voided")
        summary = deliver()

    assert summary == NOTHING_DUE
    assert receiver.ids() == [retrying.public_id, gone.public_id]
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at) == (False, "gone", T0)
    assert Delivery.objects.get(event=gone).status == DeliveryStatus.FAILED
    assert _attempts(Delivery.objects.get(event=gone)) == [(410, False)]
    pending = Delivery.objects.get(event=retrying)
    assert (pending.status, pending.next_attempt_at) == ("failed", None)
    assert pending.last_error == "endpoint disabled: The endpoint answered 410 Gone"
    assert not Delivery.objects.filter(event=later).exists()
    [email] = mailoutbox
    assert email.to == ["owner@acme.test"]
    assert email.subject == f"[Acme] Webhook endpoint disabled: {receiver.url}"
    assert "Reason:   The endpoint answered 410 Gone" in email.body
    assert endpoint.secret not in email.body
    entry = AuditLogEntry.objects.get(action="webhook_endpoint.disabled")
    assert (entry.actor_label, entry.object_id, entry.changes) == (
        "system",
        endpoint.public_id,
        {"reason": "gone"},
    )


def test_an_attempt_after_five_days_of_failures_disables_the_endpoint_and_emails_the_owners(
    endpoint, receiver, record, deliver, mailoutbox
):
    project = endpoint.project
    _member(project, Role.OWNER, "owner@acme.test")
    receiver.default = Reply(500)

    with time_machine.travel(T0, tick=False) as clock:
        first = record(project, "invoice.created")
        _run_until_settled(clock, deliver)  # its ten attempts, over about three days
        clock.move_to(T0 + timedelta(days=5))
        later = record(project, "invoice.finalized")  # its first attempt sees the 5 days

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since, endpoint.disabled_at) == (
        False,
        "failing",
        T0,
        T0 + timedelta(days=5),
    )
    assert _attempts(Delivery.objects.get(event=first)) == [(500, False)] * 10
    assert _attempts(Delivery.objects.get(event=later)) == [(500, False)]
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.FAILED}
    [email] = mailoutbox
    assert email.to == ["owner@acme.test"]
    assert "Reason:   No successful delivery for 5 days" in email.body
    assert "Failing since: 2026-03-02T09:00:00+00:00" in email.body
    entry = AuditLogEntry.objects.get(action="webhook_endpoint.disabled")
    assert (entry.actor_label, entry.object_id, entry.changes) == (
        "system",
        endpoint.public_id,
        {"reason": "failing"},
    )
    assert receiver.all_verified()


def test_retry_after_on_429_and_503_is_honoured_up_to_a_day(endpoint, receiver, record, deliver):
    asked_for = T0 + timedelta(hours=3)
    receiver.script(
        Reply(429, {"Retry-After": "3600"}),
        Reply(503, {"Retry-After": format_datetime(asked_for, usegmt=True)}),
        Reply(429, {"Retry-After": str(10 * 24 * 3600)}),
        Reply(500, {"Retry-After": "86400"}),  # only 429 and 503 may ask
        Reply(429, {"Retry-After": "1"}),  # shorter than the schedule: the schedule wins
    )

    with time_machine.travel(T0, tick=False) as clock:
        record(endpoint.project)
        delivery = Delivery.objects.get()
        assert delivery.next_attempt_at == T0 + timedelta(hours=1)
        waits = []
        for _ in range(4):
            clock.move_to(delivery.next_attempt_at)
            deliver()
            delivery.refresh_from_db()
            waits.append(delivery.next_attempt_at - timezone.now())

    assert delivery.next_attempt_at is not None
    assert waits[0] == asked_for - (T0 + timedelta(hours=1))
    assert waits[1] == timedelta(hours=24)  # 10 days asked, capped
    assert RETRY_DELAYS[3] * 0.9 <= waits[2] <= RETRY_DELAYS[3] * 1.1
    assert RETRY_DELAYS[4] * 0.9 <= waits[3] <= RETRY_DELAYS[4] * 1.1
    assert _attempts(delivery) == [(429, False), (503, False), (429, False), (500, False), (429, False)]


def test_a_response_slower_than_the_timeout_is_a_failure(endpoint, receiver, record, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.2
    release = threading.Event()
    receiver.script(Reply(200, hold=release))

    record(endpoint.project)
    release.set()

    delivery = Delivery.objects.get()
    attempt = delivery.attempts.get()
    assert (attempt.status_code, attempt.succeeded, attempt.error) == (
        None,
        False,
        "timeout: no response within 0.2 s",
    )
    assert attempt.duration_ms >= 200
    assert delivery.status == DeliveryStatus.PENDING
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(endpoint, receiver, record):
    receiver.script(Reply(307, {"Location": receiver.url + "/elsewhere"}))

    record(endpoint.project)

    assert [request.path for request in receiver.requests] == ["/hooks"]
    delivery = Delivery.objects.get()
    assert _attempts(delivery) == [(307, False)]
    assert delivery.status == DeliveryStatus.PENDING


def test_an_address_no_longer_allowed_is_refused_at_send_time(endpoint, receiver, record):
    project = endpoint.project
    project.allow_private_webhook_urls = False
    project.save()

    record(project)

    assert receiver.requests == []
    delivery = Delivery.objects.get()
    attempt = delivery.attempts.get()
    assert attempt.status_code is None
    assert attempt.error == (
        "url_not_allowed: The host '127.0.0.1' resolves to a non-public address (127.0.0.1). "
        "Webhooks go to public addresses only, unless the project allows private URLs."
    )
    assert delivery.status == DeliveryStatus.PENDING


def test_an_unreachable_receiver_is_a_failure_with_the_error(loopback_project, record):
    endpoint = make_endpoint(loopback_project, url="http://127.0.0.1:9/hooks")  # discard port: closed

    record(loopback_project)

    attempt = Delivery.objects.get(endpoint=endpoint).attempts.get()
    assert attempt.status_code is None
    assert attempt.error.startswith("ConnectError: ")


def test_after_a_rotation_both_secrets_verify_for_24_hours_then_only_the_new_one(endpoint, receiver, record):
    old_secret = endpoint.secret
    with time_machine.travel(T0, tick=False) as clock:
        endpoint = webhook_endpoint_rotate_secret(endpoint=endpoint, actor=None)
        receiver.secret = endpoint.secret
        record(endpoint.project)
        during = receiver.requests[-1]
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert Webhook(endpoint.secret).verify(during.body, during.headers)["type"] == "customer.created"
        assert Webhook(old_secret).verify(during.body, during.headers)["type"] == "customer.created"

        clock.move_to(T0 + timedelta(hours=24, seconds=1))
        record(endpoint.project)
        after = receiver.requests[-1]
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        assert Webhook(endpoint.secret).verify(after.body, after.headers)["type"] == "customer.created"
        with pytest.raises(WebhookVerificationError, match="No matching signature found"):
            Webhook(old_secret).verify(after.body, after.headers)

    assert old_secret != endpoint.secret
    assert receiver.all_verified()


def test_each_event_goes_to_the_enabled_endpoints_whose_filter_takes_it(loopback_project, record):
    everything = make_endpoint(loopback_project, url="http://127.0.0.1:9/all")
    invoices = make_endpoint(loopback_project, url="http://127.0.0.1:9/invoices", event_types=["invoice.*"])
    make_endpoint(loopback_project, url="http://127.0.0.1:9/customers", event_types=["customer.created"])
    make_endpoint(loopback_project, url="http://127.0.0.1:9/off", enabled=False)

    event = record(loopback_project, "invoice.paid")

    assert set(Delivery.objects.values_list("endpoint", "event", "is_redelivery")) == {
        (everything.pk, event.pk, False),
        (invoices.pk, event.pk, False),
    }


def test_disabling_an_endpoint_fails_its_pending_deliveries_without_email(
    endpoint, receiver, record, deliver, mailoutbox
):
    receiver.script(500)
    with time_machine.travel(T0, tick=False) as clock:
        record(endpoint.project)
        webhook_endpoint_update(endpoint=endpoint, changes={"enabled": False}, actor=None)
        clock.shift(timedelta(minutes=1))
        assert deliver() == NOTHING_DUE
        record(endpoint.project)
        webhook_endpoint_update(endpoint=endpoint, changes={"enabled": True}, actor=None)

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.last_error) == ("failed", "endpoint disabled: Disabled by a user")
    assert len(receiver.requests) == 1
    assert mailoutbox == []
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since) == (True, "", None)


def test_a_delivery_created_for_an_endpoint_disabled_meanwhile_is_cancelled(endpoint, receiver, deliver):
    record_event(endpoint.project)  # committed, first attempt not yet made
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_reason=DisabledReason.MANUAL
    )

    assert deliver() == _summary(cancelled=1)
    assert receiver.requests == []
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


def test_a_claim_held_by_a_live_worker_is_respected_and_a_lapsed_one_taken_over(endpoint, receiver, deliver):
    with time_machine.travel(T0, tick=False) as clock:
        record_event(endpoint.project)
        Delivery.objects.update(claimed_until=T0 + timedelta(seconds=120))  # a worker crashed mid-attempt

        assert deliver() == NOTHING_DUE
        clock.move_to(T0 + timedelta(seconds=120))
        assert deliver() == _summary(succeeded=1)

    assert len(receiver.requests) == 1
    assert Delivery.objects.get().claimed_until is None


def test_when_the_first_attempt_was_never_run_the_command_sends_it(
    endpoint, receiver, record, deliver, monkeypatch
):
    monkeypatch.setattr(Conf, "SYNC", False)  # queued for a worker that never runs
    event = record(endpoint.project)

    assert deliver("--dry-run") == "1 deliveries due; nothing sent (dry run)."
    assert receiver.requests == []
    assert deliver() == _summary(succeeded=1)
    assert receiver.ids() == [event.public_id]


@pytest.mark.django_db(transaction=True)
def test_the_first_attempt_is_made_after_commit_and_never_for_a_rollback(loopback_project, receiver):
    endpoint = make_endpoint(loopback_project, url=receiver.url)
    receiver.secret = endpoint.secret

    def change_that_fails():
        with transaction.atomic():
            record_event(loopback_project, "invoice.paid")
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError, match="the change fails"):
        change_that_fails()
    with transaction.atomic():
        event = record_event(loopback_project, "invoice.paid")
        assert receiver.requests == []

    assert receiver.ids() == [event.public_id]
    assert receiver.all_verified()
    assert Delivery.objects.get().status == DeliveryStatus.SUCCEEDED


def test_credentials_in_the_url_are_sent_as_basic_auth(loopback_project, receiver, record):
    port = receiver.server.server_address[1]
    endpoint = make_endpoint(loopback_project, url=f"http://hook%40acme:s3cr%3At@127.0.0.1:{port}/hooks")
    receiver.secret = endpoint.secret

    record(loopback_project)

    [got] = receiver.requests
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"hook@acme:s3cr:t").decode()
    assert got.headers["host"] == f"127.0.0.1:{port}"
    assert receiver.all_verified()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_command_shows_its_progress(endpoint, receiver):
    record_event(endpoint.project)
    record_event(endpoint.project)
    out = _Terminal()

    call_command("deliver_webhooks", stdout=out)

    assert out.getvalue() == "\r  1/2\r  2/2\n" + _summary(succeeded=2) + "\n"


def test_a_time_budget_leaves_the_rest_for_the_next_run(endpoint, receiver, deliver):
    record_event(endpoint.project)

    assert deliver("--max-seconds", "0") == NOTHING_DUE.replace("left 0", "left 1")
    assert receiver.requests == []


def test_the_scheduled_job_sends_what_is_due(endpoint, receiver):
    event = record_event(endpoint.project)

    summary = deliver_due_webhooks()

    assert Job("deliver webhooks", "webhooks.tasks.deliver_due_webhooks", 1) in JOBS
    assert summary == {
        "attempted": 1, "succeeded": 1, "rescheduled": 0, "failed": 0,
        "cancelled": 0, "skipped": 0, "errors": 0, "left": 0, "disabled": 0, "probed": 0,
    }  # fmt: skip
    assert receiver.ids() == [event.public_id]


def test_a_run_sends_what_is_due_in_the_order_the_events_happened(
    endpoint, receiver, record, deliver, monkeypatch
):
    receiver.script(500)
    with time_machine.travel(T0, tick=False) as clock:
        older = record(endpoint.project, "invoice.created")  # fails: its retry is due in about 5 s
        clock.move_to(T0 + timedelta(seconds=1))
        monkeypatch.setattr(Conf, "SYNC", False)  # the newer one's first attempt is queued and lost
        newer = record(endpoint.project, "invoice.paid")  # due at once, before the older's retry
        clock.move_to(T0 + timedelta(seconds=10))
        summary = deliver()

    assert summary == _summary(succeeded=2)
    assert receiver.ids() == [older.public_id, older.public_id, newer.public_id]


def test_only_the_start_of_a_response_body_is_kept(endpoint, receiver, record):
    receiver.script(Reply(500, body="é".encode() * 6000))

    record(endpoint.project)

    attempt = Delivery.objects.get().attempts.get()
    assert attempt.response_body == "é" * 4096


def test_a_delivery_that_trips_a_bug_does_not_hold_up_the_others(endpoint, receiver, deliver, monkeypatch):
    broken = record_event(endpoint.project, "invoice.paid")
    fine = record_event(endpoint.project, "invoice.voided")
    payload_body = signing.payload_body

    def fails_for_one_event(event):
        if event.pk == broken.pk:
            raise RuntimeError("a bug")
        return payload_body(event)

    monkeypatch.setattr(signing, "payload_body", fails_for_one_event)

    assert deliver() == _summary(succeeded=1).replace("errors 0", "errors 1")
    assert receiver.ids() == [fine.public_id]
    stuck = Delivery.objects.get(event=broken)
    assert (stuck.status, stuck.attempt_count, stuck.claimed_until is not None) == ("pending", 0, True)
