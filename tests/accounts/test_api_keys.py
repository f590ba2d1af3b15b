import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import ApiKey, AuditLogEntry, Scope
from accounts.selectors import hash_secret
from accounts.services import api_key_roll
from billing_site.errors import InvalidInput, InvalidState
from tests.accounts.factories import make_api_key
from tests.conftest import api_client
from webhooks.models import Event

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


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


# --- roll ----------------------------------------------------------------------------------------


def _state() -> tuple:
    """Everything a refused roll must leave as it was."""
    return (
        list(ApiKey.objects.order_by("pk").values_list("pk", "expires_at", "revoked_at")),
        AuditLogEntry.objects.count(),
        Event.objects.count(),
    )


def _as(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def old(api) -> dict:
    """A key made through the API the day before NOW, with its secret."""
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        return api.post(
            "/v1/api-keys", {"name": "warehouse", "scopes": ["billing:read"]}, format="json"
        ).json()


def test_roll_makes_a_new_key_and_ends_the_old_one_now_by_default(project, api, old):
    with time_machine.travel(NOW, tick=False):
        response = api.post(f"/v1/api-keys/{old['id']}/roll")

        assert response.status_code == 201
        new = response.json()
        assert new["id"] != old["id"]
        assert (new["name"], new["scopes"], new["status"]) == ("warehouse", ["billing:read"], "active")
        assert new["secret"].startswith("bk_")
        assert new["secret"] != old["secret"]
        assert new["prefix"] == new["secret"][:11]
        assert new["expires_at"] is None
        assert _as(new["secret"]).get("/v1/customers").status_code == 200
        refused = _as(old["secret"]).get("/v1/customers")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "api_key_expired"
        rolled = api.get(f"/v1/api-keys/{old['id']}").json()
        assert (rolled["status"], rolled["expires_at"], rolled["revoked_at"]) == (
            "expired",
            "2026-03-02T09:00:00Z",
            None,
        )
    assert ApiKey.objects.get(public_id=new["id"]).secret_hash == hash_secret(new["secret"])
    entry = AuditLogEntry.objects.get(action="api_key.rolled")
    assert (entry.object_id, entry.changes) == (
        old["id"],
        {"replaced_by": new["id"], "expires_at": "2026-03-02T09:00:00+00:00"},
    )


def test_the_old_key_works_until_expires_at_and_is_refused_from_then_on(project, api, old):
    with time_machine.travel(NOW, tick=False):
        response = api.post(f"/v1/api-keys/{old['id']}/roll", {"expires_in": 3600}, format="json")
    new_secret = response.json()["secret"]

    with time_machine.travel(NOW + timedelta(minutes=59, seconds=59), tick=False):
        assert _as(old["secret"]).get("/v1/customers").status_code == 200
        assert api.get(f"/v1/api-keys/{old['id']}").json()["status"] == "expiring"
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        refused = _as(old["secret"]).get("/v1/customers")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "api_key_expired"
        assert api.get(f"/v1/api-keys/{old['id']}").json()["status"] == "expired"
        assert _as(new_secret).get("/v1/customers").status_code == 200
    assert api.get(f"/v1/api-keys/{old['id']}").json()["expires_at"] == "2026-03-02T10:00:00Z"


def test_the_longest_grace_is_seven_days(project, api, old):
    response = api.post(f"/v1/api-keys/{old['id']}/roll", {"expires_in": 7 * 86400}, format="json")

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"expires_in": 7 * 86400 + 1}, "max_value"),
        ({"expires_in": -1}, "min_value"),
        ({"expires_in": "3600"}, "invalid_type"),
        ({"expires_in": 1.5}, "invalid_type"),
        ({"expires_in": None}, "null"),
        ({"expires": 3600}, "unknown_field"),
        ({"scopes": ["usage:write"]}, "unknown_field"),
    ],
)
def test_a_bad_roll_body_is_400_and_changes_nothing(project, api, old, body, code):
    before = _state()

    response = api.post(f"/v1/api-keys/{old['id']}/roll", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert _state() == before


@pytest.mark.parametrize(("expires_in", "current"), [(None, "revoked"), (3600, "expiring"), (0, "expired")])
def test_only_an_active_key_can_be_rolled(project, api, old, expires_in, current):
    if expires_in is None:
        api.delete(f"/v1/api-keys/{old['id']}")
    else:
        api.post(f"/v1/api-keys/{old['id']}/roll", {"expires_in": expires_in}, format="json")
    before = _state()

    response = api.post(f"/v1/api-keys/{old['id']}/roll")

    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_state", "api_key_not_active")
    assert (error["current"], error["requested"]) == (current, "roll")
    assert _state() == before


def test_rolling_needs_billing_update_and_every_scope_of_the_key(project, api):
    ingest = api.post("/v1/api-keys", {"name": "ingest", "scopes": ["usage:write"]}, format="json").json()
    reader = api_client(project, [Scope.BILLING_READ])
    manager = api_client(project, [Scope.BILLING_READ, Scope.BILLING_UPDATE])
    before = _state()

    forbidden = reader.post(f"/v1/api-keys/{ingest['id']}/roll")
    not_held = manager.post(f"/v1/api-keys/{ingest['id']}/roll")

    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "insufficient_scope"
    assert not_held.status_code == 422
    assert (not_held.json()["error"]["code"], not_held.json()["error"]["param"]) == ("scope_not_held", None)
    assert _state() == before


def test_another_projects_key_cannot_be_rolled(project, other_project, api):
    theirs, secret = make_api_key(other_project)
    before = _state()

    response = api.post(f"/v1/api-keys/{theirs.public_id}/roll")

    assert response.status_code == 404
    assert _state() == before
    assert _as(secret).get("/v1/customers").status_code == 200


def test_a_key_can_roll_itself_and_the_response_holds_its_replacement(project):
    own, secret = make_api_key(project)
    client = _as(secret)

    response = client.post(f"/v1/api-keys/{own.public_id}/roll")

    assert response.status_code == 201
    assert client.get("/v1/customers").json()["error"]["code"] == "api_key_expired"
    assert _as(response.json()["secret"]).get("/v1/customers").status_code == 200


def test_a_replayed_roll_does_not_roll_again_nor_show_the_secret_again(project, api, old):
    first = api.post(f"/v1/api-keys/{old['id']}/roll", {}, format="json", HTTP_IDEMPOTENCY_KEY="roll-1")
    keys = ApiKey.objects.count()

    replay = api.post(f"/v1/api-keys/{old['id']}/roll", {}, format="json", HTTP_IDEMPOTENCY_KEY="roll-1")

    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.json()["secret"] == "[shown once, in the first response]"
    assert ApiKey.objects.count() == keys


# --- events --------------------------------------------------------------------------------------


def test_activity_lists_key_creation_roll_and_revocation(project, api, old):
    new = api.post(f"/v1/api-keys/{old['id']}/roll", {"expires_in": 60}, format="json").json()
    api.delete(f"/v1/api-keys/{new['id']}")

    response = api.get("/v1/activity?type=api_key.*")

    events = [(e["type"], e["object"]["id"]) for e in response.json()["results"]]
    own = ApiKey.objects.filter(project=project).order_by("pk").first().public_id
    assert events == [
        ("api_key.revoked", new["id"]),
        ("api_key.rolled", old["id"]),
        ("api_key.created", new["id"]),
        ("api_key.created", old["id"]),
        ("api_key.created", own),
    ]
    revoked, rolled, created = (e["data"] for e in response.json()["results"][:3])
    stored = ApiKey.objects.get(public_id=old["id"])
    assert rolled == {
        "id": old["id"],
        "name": "warehouse",
        "prefix": old["prefix"],
        "scopes": ["billing:read"],
        "status": "expiring",
        "created_at": old["created_at"],
        "last_used_at": None,
        "expires_at": stored.expires_at.isoformat().replace("+00:00", "Z"),
        "revoked_at": None,
        "replaced_by": new["id"],
    }
    assert (created["id"], created["status"], created["scopes"]) == (new["id"], "active", ["billing:read"])
    revoked_at = ApiKey.objects.get(public_id=new["id"]).revoked_at
    assert (revoked["status"], revoked["revoked_at"]) == (
        "revoked",
        revoked_at.isoformat().replace("+00:00", "Z"),
    )


def test_no_event_carries_a_secret_or_its_hash(project, api, old):
    new = api.post(f"/v1/api-keys/{old['id']}/roll", format="json").json()
    api.delete(f"/v1/api-keys/{new['id']}")

    recorded = str(list(Event.objects.values_list("data", flat=True)))
    recorded += api.get("/v1/activity?type=api_key.*").content.decode()
    for key in ApiKey.objects.all():
        assert key.secret_hash not in recorded
    assert old["secret"] not in recorded
    assert new["secret"] not in recorded
    assert "secret" not in recorded


def test_revoking_twice_records_one_event(project, api, old):
    api.delete(f"/v1/api-keys/{old['id']}")
    api.delete(f"/v1/api-keys/{old['id']}")

    assert Event.objects.filter(type="api_key.revoked", object_id=old["id"]).count() == 1


def test_a_refused_creation_records_no_event(project):
    client = api_client(project, [Scope.BILLING_READ, Scope.BILLING_UPDATE])
    before = Event.objects.count()

    client.post("/v1/api-keys", {"name": "escalate", "scopes": ["usage:write"]}, format="json")

    assert Event.objects.count() == before


@pytest.mark.parametrize(
    ("expires_in", "code"),
    [(timedelta(days=7, seconds=1), "max_value"), (timedelta(seconds=-1), "min_value")],
)
def test_the_service_bounds_the_grace_whoever_calls_it(project, expires_in, code):
    api_key, _ = make_api_key(project)
    before = _state()

    with pytest.raises(InvalidInput) as refused:
        api_key_roll(api_key=api_key, expires_in=expires_in, actor=None)

    assert (refused.value.code, refused.value.param) == (code, "expires_in")
    assert _state() == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_rolls_of_one_key_make_one_replacement(project):
    api_key, _ = make_api_key(project)
    rolls = 4
    start = threading.Barrier(rolls)
    outcomes: list[str] = []

    def roll() -> None:
        try:
            start.wait(timeout=10)
            api_key_roll(api_key=ApiKey.objects.get(pk=api_key.pk), expires_in=timedelta(hours=1), actor=None)
            outcomes.append("rolled")
        except InvalidState as refused:
            outcomes.append(refused.extra["current"])
        finally:
            connection.close()

    threads = [threading.Thread(target=roll) for _ in range(rolls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["expiring"] * (rolls - 1) + ["rolled"]
    assert ApiKey.objects.filter(project=project).count() == 2
    assert Event.objects.filter(type="api_key.rolled").count() == 1
