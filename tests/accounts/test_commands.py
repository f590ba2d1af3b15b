import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiKey, Membership, Project, Role
from catalog.models import Customer

pytestmark = pytest.mark.django_db


def test_create_project_prints_json_with_a_working_all_scopes_key():
    out = StringIO()

    call_command(
        "create_project",
        "--name",
        "Acme Corp",
        "--currency",
        "EUR",
        "--timezone",
        "Europe/Berlin",
        stdout=out,
    )

    printed = json.loads(out.getvalue())
    project = Project.objects.get(public_id=printed["project"])
    assert (project.name, project.currency, project.timezone, project.invoice_number_prefix) == (
        "Acme Corp", "EUR", "Europe/Berlin", "ACMECORP",
    )  # fmt: skip
    response = APIClient().get("/v1/api-keys", HTTP_AUTHORIZATION=f"Bearer {printed['api_key']}")
    assert response.status_code == 200
    assert response.json()["results"][0]["scopes"] == ["usage:write", "billing:read", "billing:update"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--currency", "EURO", "currency: 'EURO' is not an ISO 4217 currency code in use"),
        ("--currency", "DEM", "currency: 'DEM' is not an ISO 4217 currency code in use"),
        ("--timezone", "Mars/Olympus", "timezone: 'Mars/Olympus' is not an IANA time zone"),
    ],
)
def test_create_project_refuses_bad_settings_and_creates_nothing(option, value, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_project", "--name", "Bad", option, value, stdout=StringIO())

    assert not Project.objects.exists()
    assert not ApiKey.objects.exists()


def test_load_demo_is_idempotent_and_prints_the_key_once():
    first, second = StringIO(), StringIO()

    call_command("load_demo", stdout=first)
    call_command("load_demo", stdout=second)

    assert Project.objects.count() == 1
    assert Membership.objects.get().role == Role.OWNER
    assert Customer.objects.get(external_id="cus_8fq").subscriptions.get().plan.charges.count() == 1
    assert "API key:  bk_" in first.getvalue()
    assert "bk_" not in second.getvalue()
    assert "user: demo   password: demo" in second.getvalue()
