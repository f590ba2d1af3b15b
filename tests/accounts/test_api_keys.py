import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey, AuditLogEntry, Scope
from accounts.selectors import hash_secret
from tests.conftest import api_client
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def test_create_shows_the_secret_once_and_stores_only_its_hash(project, api):
    response = api.post("/v1/api-keys", {"name": "ingest", "scopes": ["usage:write"]}, format="json")

    assert response.status_code == 201
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("bk_")
    assert body["prefix"] == secret[:11]
    assert body["scopes"] == ["usage:write"]
    assert body["status"] == "active"
    stored = ApiKey.objects.get(public_id=body["id"])
    assert stored.secret_hash == hash_secret(secret)
    assert secret not in str(stored.__dict__)
    listed = api.get("/v1/api-keys").json()["results"]
    assert all("secret" not in key for key in listed)
    assert APIClient().get("/v1/api-keys", HTTP_X_API_KEY=secret).status_code == 403  # usage:write only


def test_scopes_default_to_all(api):
    response = api.post("/v1/api-keys", {"name": "all"}, format="json")

    assert response.json()["scopes"] == ["usage:write", "billing:read", "billing:update"]


def test_a_key_cannot_grant_scopes_it_lacks(project):
    client = api_client(project, [Scope.BILLING_READ, Scope.BILLING_UPDATE])
    keys_before = ApiKey.objects.count()

    response = client.post("/v1/api-keys", {"name": "escalate", "scopes": ["usage:write"]}, format="json")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "scope_not_held"
    assert response.json()["error"]["param"] == "scopes"
    assert ApiKey.objects.count() == keys_before


def test_revoke_stops_the_key_and_is_audited(project, api):
    created = api.post("/v1/api-keys", {"name": "old"}, format="json").json()

    response = api.delete(f"/v1/api-keys/{created['id']}")
    again = api.delete(f"/v1/api-keys/{created['id']}")

    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert again.json()["revoked_at"] == response.json()["revoked_at"]
    denied = APIClient().get("/v1/api-keys", HTTP_AUTHORIZATION=f"Bearer {created['secret']}")
    assert denied.json()["error"]["code"] == "api_key_revoked"
    actions = list(
        AuditLogEntry.objects.filter(object_id=created["id"])
        .order_by("id")
        .values_list("action", "actor_label")
    )
    assert [action for action, _ in actions] == ["api_key.created", "api_key.revoked"]
    assert all(label.startswith("API key bk_") for _, label in actions)


def test_last_used_is_recorded(project):
    client = api_client(project)
    client.get("/v1/api-keys")

    assert ApiKey.objects.filter(project=project, last_used_at__isnull=False).count() == 1


# --- events --------------------------------------------------------------------------------------


def test_activity_lists_key_creation_and_revocation(project, api):
    created = api.post(
        "/v1/api-keys", {"name": "warehouse", "scopes": ["billing:read"]}, format="json"
    ).json()
    api.delete(f"/v1/api-keys/{created['id']}")

    response = api.get("/v1/activity?type=api_key.*")

    events = [(e["type"], e["object"]["id"]) for e in response.json()["results"]]
    own = ApiKey.objects.filter(project=project).order_by("pk").first().public_id
    assert events == [
        ("api_key.revoked", created["id"]),
        ("api_key.created", created["id"]),
        ("api_key.created", own),
    ]
    revoked, creation = (e["data"] for e in response.json()["results"][:2])
    assert creation == {
        "id": created["id"],
        "name": "warehouse",
        "prefix": created["prefix"],
        "scopes": ["billing:read"],
        "status": "active",
        "created_at": created["created_at"],
        "last_used_at": None,
        "revoked_at": None,
    }
    revoked_at = ApiKey.objects.get(public_id=created["id"]).revoked_at
    assert (revoked["status"], revoked["revoked_at"]) == (
        "revoked",
        revoked_at.isoformat().replace("+00:00", "Z"),
    )


def test_no_event_carries_a_secret_or_its_hash(project, api):
    created = api.post("/v1/api-keys", {"name": "warehouse"}, format="json").json()
    api.delete(f"/v1/api-keys/{created['id']}")

    recorded = str(list(Event.objects.values_list("data", flat=True)))
    recorded += api.get("/v1/activity?type=api_key.*").content.decode()
    for key in ApiKey.objects.all():
        assert key.secret_hash not in recorded
    assert created["secret"] not in recorded
    assert "secret" not in recorded


def test_revoking_twice_records_one_event(project, api):
    created = api.post("/v1/api-keys", {"name": "warehouse"}, format="json").json()
    api.delete(f"/v1/api-keys/{created['id']}")
    api.delete(f"/v1/api-keys/{created['id']}")

    assert Event.objects.filter(type="api_key.revoked", object_id=created["id"]).count() == 1


def test_a_refused_creation_records_no_event(project):
    client = api_client(project, [Scope.BILLING_READ, Scope.BILLING_UPDATE])
    before = Event.objects.count()

    client.post("/v1/api-keys", {"name": "escalate", "scopes": ["usage:write"]}, format="json")

    assert Event.objects.count() == before
