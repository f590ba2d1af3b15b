import pytest

from accounts.models import AuditLogEntry, Project, Scope
from accounts.services import project_update
from billing_site.errors import InvalidInput
from tests.catalog.factories import CustomerFactory
from tests.conftest import api_client
from webhooks.models import Event

pytestmark = pytest.mark.django_db

SECRETS = {"stripe_secret_key": "sk_live_hush", "stripe_webhook_secret": "whsec_hush"}


@pytest.fixture
def configured(project) -> Project:
    for name, value in SECRETS.items():
        setattr(project, name, value)
    project.stripe_publishable_key = "pk_live_public"
    project.payment_processor = "stripe"
    project.save()
    return project


def _snapshot(project: Project) -> tuple:
    project.refresh_from_db()
    return (
        {field.attname: getattr(project, field.attname) for field in Project._meta.concrete_fields},
        AuditLogEntry.objects.filter(action="project.updated").count(),
        Event.objects.filter(type="project.updated").count(),
    )


def test_get_shows_the_keys_project_without_its_secrets(configured, api):
    response = api.get("/v1/project")

    assert response.status_code == 200
    assert response.json() == {
        "id": configured.public_id,
        "name": "Acme",
        "sandbox": False,
        "currency": "USD",
        "timezone": "UTC",
        "invoice_delivery": "auto",
        "grace_period_hours": 1,
        "payment_terms_days": 30,
        "invoice_number_prefix": "ACME",
        "unmatched_usage": "keep",
        "require_usage_idempotency_key": False,
        "sender_name": "",
        "sender_email": "",
        "reply_to_email": "",
        "accent_color": "#1f6feb",
        "footer_text": "",
        "company_name": "",
        "company_address": "",
        "company_tax_id": "",
        "payment_instructions": "",
        "locale": "en_US",
        "email_invoices": True,
        "payment_processor": "stripe",
        "payout_delay_hours": 48,
        "payment_retry_days": [1, 3, 5, 7],
        "dunning_final_action": "leave_open",
        "stripe_secret_key_set": True,
        "stripe_webhook_secret_set": True,
        "api_rate_limit_per_minute": 1200,
        "ingest_rate_limit_per_minute": 60000,
        "created_at": configured.created_at.isoformat().replace("+00:00", "Z"),
    }


def test_unset_stripe_secrets_read_false(project, api):
    body = api.get("/v1/project").json()

    assert (body["stripe_secret_key_set"], body["stripe_webhook_secret_set"]) == (False, False)


def test_patch_changes_what_it_names_audits_and_announces(configured, api):
    changes = {
        "name": "Acme Inc",
        "currency": "EUR",
        "timezone": "Europe/Paris",
        "invoice_delivery": "review",
        "grace_period_hours": 6,
        "payment_terms_days": 14,
        "invoice_number_prefix": "ACME-EU",
        "unmatched_usage": "reject",
        "require_usage_idempotency_key": True,
        "sender_name": "Acme Billing",
        "sender_email": "billing@acme.example",
        "reply_to_email": "help@acme.example",
        "accent_color": "#112233",
        "footer_text": "Acme Inc, 1 Main St",
    }

    response = api.patch("/v1/project", changes, format="json")

    assert response.status_code == 200
    body = response.json()
    assert {name: body[name] for name in changes} == changes
    configured.refresh_from_db()
    assert {name: getattr(configured, name) for name in changes} == changes
    entry = AuditLogEntry.objects.get(action="project.updated")
    assert entry.actor_label.startswith("API key bk_")
    assert entry.changes["currency"] == ["USD", "EUR"]
    assert entry.changes["grace_period_hours"] == ["1", "6"]
    event = Event.objects.get(type="project.updated")
    assert (event.object_type, event.object_id) == ("project", configured.public_id)
    assert event.data["changed_fields"] == sorted(changes)
    assert event.data["currency"] == "EUR"
    activity = api.get("/v1/activity?type=project.*").json()["results"]
    assert [item["data"]["changed_fields"] for item in activity] == [sorted(changes)]


def test_patch_names_only_the_fields_that_changed(project, api):
    response = api.patch("/v1/project", {"name": "Acme", "payment_terms_days": 45}, format="json")

    assert response.json()["payment_terms_days"] == 45
    event = Event.objects.get(type="project.updated")
    assert event.data["changed_fields"] == ["payment_terms_days"]
    assert AuditLogEntry.objects.get(action="project.updated").changes == {"payment_terms_days": ["30", "45"]}


@pytest.mark.parametrize("body", [{}, {"name": "Acme", "currency": "USD"}])
def test_patch_to_nothing_new_records_nothing(project, api, body):
    before = _snapshot(project)

    response = api.patch("/v1/project", body, format="json")

    assert response.status_code == 200
    assert response.json()["name"] == "Acme"
    assert _snapshot(project) == before


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"nmae": "typo"}, "nmae", "unknown_field"),
        ({"sandbox": True}, "sandbox", "unknown_field"),
        ({"id": "proj_x"}, "id", "unknown_field"),
        ({"api_rate_limit_per_minute": 10**6}, "api_rate_limit_per_minute", "unknown_field"),
        ({"payment_processor": "manual"}, "payment_processor", "unknown_field"),
        ({"stripe_secret_key": "sk_live_other"}, "stripe_secret_key", "unknown_field"),
        ({"stripe_secret_key_set": False}, "stripe_secret_key_set", "unknown_field"),
        ({"logo": "https://example.com/logo.png"}, "logo", "unknown_field"),
        ({"currency": "usd"}, "currency", "invalid_currency"),
        ({"currency": "XYZ"}, "currency", "invalid_currency"),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid_timezone"),
        ({"name": ""}, "name", "blank"),
        ({"name": "x" * 201}, "name", "max_length"),
        ({"grace_period_hours": 745}, "grace_period_hours", "max_value"),
        ({"grace_period_hours": -1}, "grace_period_hours", "min_value"),
        ({"grace_period_hours": "6"}, "grace_period_hours", "invalid_type"),
        ({"payment_terms_days": 366}, "payment_terms_days", "max_value"),
        ({"invoice_number_prefix": "acme"}, "invoice_number_prefix", "invalid"),
        ({"invoice_delivery": "sometimes"}, "invoice_delivery", "invalid_choice"),
        ({"unmatched_usage": "drop"}, "unmatched_usage", "invalid_choice"),
        ({"require_usage_idempotency_key": "true"}, "require_usage_idempotency_key", "invalid_type"),
        ({"sender_email": "billing@localhost"}, "sender_email", "invalid_email"),
        ({"accent_color": "blue"}, "accent_color", "invalid"),
        ({"footer_text": "x" * 2001}, "footer_text", "max_length"),
    ],
)
def test_bad_patches_are_400_and_change_nothing(configured, api, body, param, code):
    before = _snapshot(configured)

    response = api.patch("/v1/project", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert _snapshot(configured) == before


def test_changing_currency_and_timezone_changes_only_the_defaults_of_new_customers(project, api):
    existing = CustomerFactory(project=project, currency="USD", timezone="UTC")

    api.patch("/v1/project", {"currency": "EUR", "timezone": "Europe/Paris"}, format="json")
    created = api.post("/v1/customers", {"external_id": "new"}, format="json").json()

    existing.refresh_from_db()
    assert (existing.currency, existing.timezone) == ("USD", "UTC")
    assert (created["currency"], created["timezone"]) == ("EUR", "Europe/Paris")


def test_reading_needs_billing_read_and_writing_billing_update(project):
    reader = api_client(project, [Scope.BILLING_READ])
    writer = api_client(project, [Scope.BILLING_UPDATE])
    before = _snapshot(project)

    denied_patch = reader.patch("/v1/project", {"name": "Nope"}, format="json")
    denied_get = writer.get("/v1/project")

    assert reader.get("/v1/project").status_code == 200
    assert denied_patch.status_code == 403
    assert denied_patch.json()["error"]["code"] == "insufficient_scope"
    assert denied_get.status_code == 403
    assert _snapshot(project) == before


def test_a_key_sees_and_changes_only_its_own_project(project, other_project, api):
    theirs = api_client(other_project)

    api.patch("/v1/project", {"name": "Mine"}, format="json")
    response = theirs.get("/v1/project")

    assert response.json()["id"] == other_project.public_id
    assert response.json()["name"] == "Globex"
    other_project.refresh_from_db()
    assert other_project.name == "Globex"
    assert not Event.objects.filter(project=other_project, type="project.updated").exists()


def test_without_a_key_it_is_401(client):
    assert client.get("/v1/project").status_code == 401


def test_secrets_appear_in_no_response_event_or_audit_entry(configured, api):
    responses = [
        api.get("/v1/project"),
        api.patch("/v1/project", {"name": "Acme Inc"}, format="json"),
        api.get("/v1/activity"),
    ]

    recorded = [
        *(response.content.decode() for response in responses),
        str(list(Event.objects.values_list("data", flat=True))),
        str(list(AuditLogEntry.objects.values_list("changes", flat=True))),
    ]
    for text in recorded:
        for secret in SECRETS.values():
            assert secret not in text


def test_the_service_refuses_a_value_the_model_does_not_take(project):
    before = _snapshot(project)

    with pytest.raises(InvalidInput) as refused:
        project_update(project=project, changes={"currency": "ABC"}, actor=None)

    assert (refused.value.param, refused.value.code) == ("currency", "invalid_currency")
    assert _snapshot(project) == before


def test_the_service_masks_secrets_in_the_audit_trail(project):
    project_update(project=project, changes={"stripe_webhook_secret": "whsec_new"}, actor=None)

    entry = AuditLogEntry.objects.get(action="project.updated")
    assert entry.changes == {"stripe_webhook_secret": ["••••••", "••••••"]}
    assert Event.objects.get(type="project.updated").data["stripe_webhook_secret_set"] is True


def test_a_patch_replayed_with_its_idempotency_key_runs_once(project, api):
    first = api.patch("/v1/project", {"name": "Acme Inc"}, format="json", HTTP_IDEMPOTENCY_KEY="p-1")
    api.patch("/v1/project", {"name": "Acme"}, format="json")  # changed back in between

    replay = api.patch("/v1/project", {"name": "Acme Inc"}, format="json", HTTP_IDEMPOTENCY_KEY="p-1")

    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    project.refresh_from_db()
    assert project.name == "Acme"
    assert Event.objects.filter(type="project.updated").count() == 2


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"payment_retry_days": [3, 1]}, 422, "invalid_retry_days"),
        ({"payment_retry_days": [1, 3.0, 3]}, 422, "invalid_retry_days"),
        ({"payment_retry_days": [0]}, 400, "min_value"),
        ({"payment_retry_days": list(range(1, 12))}, 400, "max_length"),
    ],
)
def test_retry_days_must_be_a_rising_schedule(project, api, change, status, code):
    before = _snapshot(project)

    response = api.patch("/v1/project", change, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert _snapshot(project) == before


def test_the_dunning_settings_change_through_the_api(project, api):
    response = api.patch(
        "/v1/project",
        {
            "payment_retry_days": [2, 4],
            "dunning_final_action": "mark_uncollectible",
            "payout_delay_hours": 24,
        },
        format="json",
    )

    project.refresh_from_db()
    assert response.status_code == 200
    assert (project.payment_retry_days, project.dunning_final_action, project.payout_delay_hours) == (
        [2, 4], "mark_uncollectible", 24,
    )  # fmt: skip
