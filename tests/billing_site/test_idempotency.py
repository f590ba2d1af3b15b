import gzip
import json
import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from accounts.models import ApiKey, AuditLogEntry
from billing_site.idempotency import idempotency_purge_expired
from billing_site.models import IdempotencyRecord
from tests.accounts.factories import make_api_key
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def _create_key(client, body, key="k-1"):
    return client.post("/v1/api-keys", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_replay_returns_the_same_body_and_the_header(project, api):
    first = _create_key(api, {"name": "ci", "scopes": ["billing:read"]})
    second = _create_key(api, {"name": "ci", "scopes": ["billing:read"]})

    assert first.status_code == second.status_code == 201
    assert second.json() == {**first.json(), "secret": "[shown once, in the first response]"}
    assert second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert ApiKey.objects.filter(project=project, name="ci").count() == 1


def test_a_secret_shown_once_is_not_kept_for_replay(project, api):
    first = _create_key(api, {"name": "ci", "scopes": ["billing:read"]})
    replay = _create_key(api, {"name": "ci", "scopes": ["billing:read"]})

    assert first.json()["secret"].startswith("bk_")
    assert replay.json() == {**first.json(), "secret": "[shown once, in the first response]"}
    assert first.json()["secret"].encode() not in bytes(IdempotencyRecord.objects.get().response_body)


def test_same_json_in_another_layout_is_the_same_request(project, api):
    first = api.post(
        "/v1/api-keys", '{"name": "ci", "scopes": ["billing:read"]}', content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k-1",
    )  # fmt: skip
    second = api.post(
        "/v1/api-keys", '{"scopes":["billing:read"],"name":"ci"}', content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k-1",
    )  # fmt: skip

    assert second.json()["id"] == first.json()["id"]
    assert second["Idempotent-Replayed"] == "true"


def test_same_key_with_another_body_is_409_and_changes_nothing(project, api):
    _create_key(api, {"name": "ci", "scopes": ["billing:read"]})
    keys_before = ApiKey.objects.count()

    response = _create_key(api, {"name": "other", "scopes": ["billing:read"]})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert response.json()["error"]["type"] == "conflict"
    assert ApiKey.objects.count() == keys_before


def test_same_key_on_another_path_is_409(project, api):
    _create_key(api, {"name": "ci", "scopes": ["billing:read"]})

    response = api.post("/v1/api-keys?x=1", {"name": "ci", "scopes": ["billing:read"]}, format="json",
                        HTTP_IDEMPOTENCY_KEY="k-1")  # fmt: skip

    assert response.json()["error"]["code"] == "idempotency_key_reused"


def test_keys_are_scoped_per_project(project, other_project):
    mine, theirs = api_client(project), api_client(other_project)

    first = _create_key(mine, {"name": "a", "scopes": ["billing:read"]})
    second = _create_key(theirs, {"name": "b", "scopes": ["billing:read"]})

    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second


def test_a_request_in_flight_answers_409_in_use(project, api):
    body = {"name": "ci", "scopes": ["billing:read"]}
    IdempotencyRecord.objects.create(
        project=project, key="k-1", fingerprint=_fingerprint_of(api, body), locked_at=timezone.now()
    )
    keys_before = ApiKey.objects.count()

    response = _create_key(api, body)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert ApiKey.objects.count() == keys_before


def test_an_abandoned_claim_is_taken_over(project, api):
    body = {"name": "ci", "scopes": ["billing:read"]}
    fingerprint = _fingerprint_of(api, body)
    IdempotencyRecord.objects.create(
        project=project, key="k-1", fingerprint=fingerprint, locked_at=timezone.now() - timedelta(minutes=10)
    )

    response = _create_key(api, body)

    assert response.status_code == 201
    assert IdempotencyRecord.objects.get(project=project, key="k-1").status == "done"


def _fingerprint_of(api, body) -> str:
    """Send once under a throwaway key, and read the fingerprint the server computed."""
    _create_key(api, body, key="probe")
    record = IdempotencyRecord.objects.get(key="probe")
    ApiKey.objects.filter(name=body["name"]).delete()
    return record.fingerprint


def test_validation_failure_is_not_stored_so_a_corrected_retry_runs(project, api):
    bad = _create_key(api, {"name": "ci", "scopes": ["nope"]})
    good = _create_key(api, {"name": "ci", "scopes": ["billing:read"]})

    assert bad.status_code == 400
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good


@pytest.mark.urls("tests.urls")
def test_a_crash_rolls_back_and_releases_the_key(project):
    client = api_client(project)
    client.raise_request_exception = False
    writes_before = AuditLogEntry.objects.filter(action="test.failing_write").count()

    response = client.post("/v1/test/failing-write", {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert response.status_code == 500
    assert AuditLogEntry.objects.filter(action="test.failing_write").count() == writes_before
    assert not IdempotencyRecord.objects.filter(key="k-1").exists()


@pytest.mark.urls("tests.urls")
def test_a_business_rule_refusal_is_replayed(project):
    client = api_client(project)

    first = client.post(
        "/v1/test/failing-write", {"fail": "state"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    second = client.post(
        "/v1/test/failing-write", {"fail": "state"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert first.status_code == second.status_code == 422
    assert second["Idempotent-Replayed"] == "true"
    assert AuditLogEntry.objects.filter(action="test.failing_write").count() == 0


def test_overlong_key_is_400(api):
    response = _create_key(api, {"name": "ci", "scopes": ["billing:read"]}, key="k" * 256)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


def test_gzip_body_is_decoded_and_fingerprinted_decoded(project, api):
    body = json.dumps({"name": "zipped", "scopes": ["billing:read"]}).encode()

    zipped = api.generic("POST", "/v1/api-keys", gzip.compress(body), content_type="application/json",
                         HTTP_CONTENT_ENCODING="gzip", HTTP_IDEMPOTENCY_KEY="k-1")  # fmt: skip
    plain = api.generic(
        "POST", "/v1/api-keys", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert zipped.status_code == 201
    assert plain["Idempotent-Replayed"] == "true"


def test_stored_responses_are_replayed_for_24_hours_then_purged(project, api):
    body = {"name": "ci", "scopes": ["billing:read"]}
    with time_machine.travel(timezone.now(), tick=False) as clock:
        _create_key(api, body)
        clock.shift(timedelta(hours=23, minutes=59))
        assert idempotency_purge_expired() == 0
        assert _create_key(api, body)["Idempotent-Replayed"] == "true"
        clock.shift(timedelta(minutes=2))
        assert idempotency_purge_expired() == 1


@pytest.mark.postgres
@pytest.mark.urls("tests.urls")
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_execute_exactly_once(project):
    _, secret = make_api_key(project)
    clients = 8
    barrier = threading.Barrier(clients)
    statuses: list[tuple[int, str | None]] = []

    def send():
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        barrier.wait()
        try:
            response = client.post(
                "/v1/test/slow-write", {"sleep": 0.5}, format="json", HTTP_IDEMPOTENCY_KEY="same"
            )
            code = response.json().get("error", {}).get("code")
            statuses.append((response.status_code, code))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert AuditLogEntry.objects.filter(action="test.slow_write").count() == 1
    assert sorted(statuses) == [(201, None)] + [(409, "idempotency_key_in_use")] * (clients - 1)
