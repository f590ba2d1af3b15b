"""`/v1/webhook-endpoints`: CRUD, secret rotation, deliveries and redelivery, through the API."""

from datetime import UTC, datetime

import pytest
import time_machine

from accounts.models import AuditLogEntry, Scope
from tests.conftest import api_client
from tests.webhooks.factories import PUBLIC_URL, make_endpoint, record_event
from webhooks.models import Delivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _error(response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def test_creating_an_endpoint_shows_its_secret_once(project, api):
    with time_machine.travel(T0, tick=False):
        response = api.post(
            "/v1/webhook-endpoints",
            {"url": PUBLIC_URL, "description": "ERP", "event_types": ["invoice.*", "customer.created"]},
            format="json",
        )

    assert response.status_code == 201
    body = response.json()
    endpoint = WebhookEndpoint.objects.get()
    assert body == {
        "id": endpoint.public_id,
        "url": PUBLIC_URL,
        "description": "ERP",
        "event_types": ["invoice.*", "customer.created"],
        "enabled": True,
        "disabled_reason": "",
        "disabled_at": None,
        "failing_since": None,
        "previous_secret_expires_at": None,
        "created_at": "2026-03-02T09:00:00Z",
        "updated_at": "2026-03-02T09:00:00Z",
        "secret": endpoint.secret,
    }
    assert endpoint.secret.startswith("whsec_")
    assert len(endpoint.secret) == len("whsec_") + 44  # 32 random bytes, base64
    assert endpoint.project == project
    assert "secret" not in api.get(f"/v1/webhook-endpoints/{endpoint.public_id}").json()
    assert "secret" not in api.get("/v1/webhook-endpoints").json()["results"][0]
    entry = AuditLogEntry.objects.get(action="webhook_endpoint.created")
    assert entry.object_id == endpoint.public_id
    assert endpoint.secret not in str(entry.changes)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hooks",
        "http://localhost/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://172.16.5.4/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/",  # shared address space (a cloud metadata service)
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::1]/hooks",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_urls_that_resolve_to_non_public_addresses_are_refused(project, api, url):
    response = api.post("/v1/webhook-endpoints", {"url": url}, format="json")

    assert _error(response) == (422, "url_not_allowed", "url")
    assert not WebhookEndpoint.objects.exists()
    assert not AuditLogEntry.objects.filter(action__startswith="webhook_endpoint.").exists()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://93.184.215.14/hooks", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("not a url", "invalid_url"),
        ("https://does-not-exist.invalid/hooks", "url_unresolvable"),
    ],
)
def test_urls_that_are_not_http_or_do_not_resolve_are_refused(project, api, url, code):
    response = api.post("/v1/webhook-endpoints", {"url": url}, format="json")

    assert _error(response) == (422, code, "url")
    assert not WebhookEndpoint.objects.exists()


def test_a_project_that_allows_private_urls_may_use_loopback(loopback_project):
    api = api_client(loopback_project)

    response = api.post("/v1/webhook-endpoints", {"url": "http://127.0.0.1:8000/hooks"}, format="json")

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("event_types", "param"),
    [
        (["invoice.*", "Invoice.Paid"], "event_types[1]"),
        (["*"], "event_types[0]"),
        (["invoice."], "event_types[0]"),
    ],
)
def test_malformed_event_type_filters_are_refused(project, api, event_types, param):
    response = api.post(
        "/v1/webhook-endpoints", {"url": PUBLIC_URL, "event_types": event_types}, format="json"
    )

    assert _error(response) == (400, "invalid_event_type", param)
    assert not WebhookEndpoint.objects.exists()


def test_patch_changes_what_it_names_and_checks_the_url_again(project, api):
    endpoint = make_endpoint(project)
    url = f"/v1/webhook-endpoints/{endpoint.public_id}"

    refused = api.patch(url, {"url": "http://10.0.0.1/"}, format="json")
    changed = api.patch(url, {"event_types": ["invoice.paid"], "description": "Finance"}, format="json")

    assert _error(refused) == (422, "url_not_allowed", "url")
    assert changed.status_code == 200
    assert (changed.json()["url"], changed.json()["event_types"], changed.json()["description"]) == (
        PUBLIC_URL,
        ["invoice.paid"],
        "Finance",
    )
    entry = AuditLogEntry.objects.get(action="webhook_endpoint.updated")
    assert entry.changes == {"event_types": ["[]", "['invoice.paid']"], "description": ["", "Finance"]}


def test_disabling_and_enabling_through_patch(project, api):
    endpoint = make_endpoint(project)
    url = f"/v1/webhook-endpoints/{endpoint.public_id}"

    with time_machine.travel(T0, tick=False):
        disabled = api.patch(url, {"enabled": False}, format="json").json()
    enabled = api.patch(url, {"enabled": True}, format="json").json()

    assert (disabled["enabled"], disabled["disabled_reason"], disabled["disabled_at"]) == (
        False,
        "manual",
        "2026-03-02T09:00:00Z",
    )
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["disabled_at"]) == (True, "", None)


def test_rotating_the_secret_returns_the_new_one_and_keeps_the_old_for_a_day(project, api):
    endpoint = make_endpoint(project)

    with time_machine.travel(T0, tick=False):
        response = api.post(f"/v1/webhook-endpoints/{endpoint.public_id}/rotate-secret")

    assert response.status_code == 200
    old = endpoint.secret
    endpoint.refresh_from_db()
    assert response.json()["secret"] == endpoint.secret != old
    assert response.json()["previous_secret_expires_at"] == "2026-03-03T09:00:00Z"
    assert endpoint.previous_secret == old
    assert AuditLogEntry.objects.get(action="webhook_endpoint.secret_rotated").changes == {
        "previous_secret_expires_at": "2026-03-03T09:00:00Z"
    }


def test_deleting_an_endpoint_removes_its_deliveries_but_not_the_events(project, api):
    endpoint = make_endpoint(project)
    event = record_event(project)

    response = api.delete(f"/v1/webhook-endpoints/{endpoint.public_id}")

    assert response.status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert not Delivery.objects.exists()
    event.refresh_from_db()
    assert AuditLogEntry.objects.get(action="webhook_endpoint.deleted").object_id == endpoint.public_id


def test_a_read_only_key_lists_but_cannot_write(project):
    endpoint = make_endpoint(project)
    reader = api_client(project, [Scope.BILLING_READ])

    listed = reader.get("/v1/webhook-endpoints")
    created = reader.post("/v1/webhook-endpoints", {"url": PUBLIC_URL}, format="json")
    rotated = reader.post(f"/v1/webhook-endpoints/{endpoint.public_id}/rotate-secret")

    assert [e["id"] for e in listed.json()["results"]] == [endpoint.public_id]
    assert _error(created)[:2] == (403, "insufficient_scope")
    assert _error(rotated)[:2] == (403, "insufficient_scope")
    assert WebhookEndpoint.objects.count() == 1


@pytest.mark.parametrize(
    ("method", "suffix", "data"),
    [
        ("get", "deliveries", None),
        ("post", "rotate-secret", None),
        ("post", "redeliver", {"event": "msg_x"}),
        ("post", "recover", {"since": "2026-03-01T00:00:00Z"}),
    ],
)
def test_another_projects_endpoint_is_404_on_every_sub_route(
    project, other_project, api, method, suffix, data
):
    theirs = make_endpoint(other_project)

    response = getattr(api, method)(f"/v1/webhook-endpoints/{theirs.public_id}/{suffix}", data, format="json")

    assert _error(response) == (404, "not_found", None)
    theirs.refresh_from_db()
    assert theirs.previous_secret == ""


def test_deliveries_are_listed_newest_first_with_attempts_and_filters(project, api):
    endpoint = make_endpoint(project)
    with time_machine.travel(T0, tick=False):
        paid = record_event(project, "invoice.paid")
        created = record_event(project, "customer.created")
    Delivery.objects.filter(event=paid).update(status="failed")
    url = f"/v1/webhook-endpoints/{endpoint.public_id}/deliveries"

    everything = api.get(url).json()["results"]
    failed = api.get(f"{url}?status=failed").json()["results"]
    invoices = api.get(f"{url}?event_type=invoice.*").json()["results"]
    by_event = api.get(f"{url}?event={created.public_id}").json()["results"]

    first = Delivery.objects.get(event=created)
    assert everything[0] == {
        "id": first.public_id,
        "endpoint": endpoint.public_id,
        "event": created.public_id,
        "event_type": "customer.created",
        "is_redelivery": False,
        "status": "pending",
        "attempt_count": 0,
        "next_attempt_at": "2026-03-02T09:00:00Z",
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": "",
        "succeeded_at": None,
        "created_at": "2026-03-02T09:00:00Z",
        "attempts": [],
    }
    assert [d["event"] for d in everything] == [created.public_id, paid.public_id]
    assert [d["event"] for d in failed] == [paid.public_id]
    assert [d["event"] for d in invoices] == [paid.public_id]
    assert [d["event"] for d in by_event] == [created.public_id]


def test_redeliver_sends_the_event_again_with_the_same_webhook_id(
    loopback_project, receiver, record, django_capture_on_commit_callbacks
):
    api = api_client(loopback_project)
    endpoint = make_endpoint(loopback_project, url=receiver.url, event_types=["invoice.*"])
    receiver.secret = endpoint.secret
    sent = record(loopback_project, "invoice.paid")
    unmatched = record(loopback_project, "customer.created")  # the filter keeps it from the endpoint

    with django_capture_on_commit_callbacks(execute=True):
        again = api.post(
            f"/v1/webhook-endpoints/{endpoint.public_id}/redeliver", {"event": sent.public_id}, format="json"
        )
        explicit = api.post(
            f"/v1/webhook-endpoints/{endpoint.public_id}/redeliver",
            {"event": unmatched.public_id},
            format="json",
        )

    assert (again.status_code, explicit.status_code) == (201, 201)
    assert (again.json()["event"], again.json()["is_redelivery"]) == (sent.public_id, True)
    assert receiver.ids() == [sent.public_id, sent.public_id, unmatched.public_id]
    assert receiver.all_verified()
    assert Delivery.objects.filter(is_redelivery=True, status="succeeded").count() == 2
    assert AuditLogEntry.objects.filter(action="webhook_delivery.redelivered").count() == 2


def test_redeliver_refuses_unknown_events_and_disabled_endpoints(project, other_project, api):
    endpoint = make_endpoint(project)
    mine = record_event(project)
    theirs = record_event(other_project)
    url = f"/v1/webhook-endpoints/{endpoint.public_id}/redeliver"

    unknown = api.post(url, {"event": theirs.public_id}, format="json")
    api.patch(f"/v1/webhook-endpoints/{endpoint.public_id}", {"enabled": False}, format="json")
    disabled = api.post(url, {"event": mine.public_id}, format="json")

    assert _error(unknown) == (422, "not_found", "event")
    assert _error(disabled) == (422, "endpoint_disabled", None)
    assert disabled.json()["error"]["current"] == "disabled"
    assert not Delivery.objects.filter(is_redelivery=True).exists()
