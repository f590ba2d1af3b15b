from decimal import Decimal

import pytest
import time_machine

from accounts.models import AuditLogEntry
from catalog.models import Customer, TaxRate
from catalog.taxes import tax_rates_default
from tests.catalog.factories import CustomerFactory, TaxRateFactory
from webhooks.models import Event

pytestmark = pytest.mark.django_db

T0 = "2026-03-01T12:00:00Z"


def test_create_answers_the_rate_and_records_the_event(api, project):
    with time_machine.travel(T0, tick=False):
        response = api.post(
            "/v1/tax-rates",
            {
                "name": "VAT",
                "percentage": "20.5",
                "inclusive": True,
                "jurisdiction": "FR",
                "is_default": True,
            },
            format="json",
        )

    body = response.json()
    assert response.status_code == 201
    assert body == {
        "id": body["id"],
        "name": "VAT",
        "percentage": "20.5",
        "inclusive": True,
        "jurisdiction": "FR",
        "is_default": True,
        "created_at": "2026-03-01T12:00:00Z",
        "archived_at": None,
    }
    assert body["id"].startswith("txr_")
    assert TaxRate.objects.get().percentage == Decimal("20.5")
    event = Event.objects.get(type="tax_rate.created")
    assert (event.object_id, event.data) == (body["id"], body)
    assert AuditLogEntry.objects.filter(action="tax_rate.created").count() == 1


def test_defaults_inclusive_false_and_jurisdiction_blank(api):
    body = api.post("/v1/tax-rates", {"name": "Sales tax", "percentage": 7.25}, format="json").json()

    assert (body["percentage"], body["inclusive"], body["jurisdiction"], body["is_default"]) == (
        "7.25",
        False,
        "",
        False,
    )


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"percentage": "100.5"}, 422, "percentage_out_of_range", "percentage"),
        ({"percentage": 101}, 400, "invalid_decimal", "percentage"),
        ({"percentage": "-1"}, 400, "invalid_decimal", "percentage"),
        ({"percentage": "1.1234567"}, 400, "invalid_decimal", "percentage"),
        ({"percentage": "abc"}, 400, "invalid_decimal", "percentage"),
        ({"percentage": "20", "rate": "5"}, 400, "unknown_field", "rate"),
        ({}, 400, "required", "percentage"),
    ],
)
def test_invalid_rates_are_refused_and_nothing_is_created(api, body, status, code, param):
    response = api.post("/v1/tax-rates", {"name": "VAT", **body}, format="json")

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["param"]) == (status, code, param)
    assert not TaxRate.objects.exists()
    assert not Event.objects.filter(type__startswith="tax_rate.").exists()


def test_list_shows_rates_in_use_and_archived_on_request(api, project, other_project):
    vat = TaxRateFactory(project=project, name="VAT")
    old = TaxRateFactory(project=project, name="Old VAT")
    TaxRateFactory(project=other_project)
    api.post(f"/v1/tax-rates/{old.public_id}/archive")

    in_use = [rate["id"] for rate in api.get("/v1/tax-rates").json()["results"]]
    archived = [rate["id"] for rate in api.get("/v1/tax-rates?archived=true").json()["results"]]

    assert (in_use, archived) == ([vat.public_id], [old.public_id])


def test_patch_changes_name_jurisdiction_and_default_only(api, project):
    rate = TaxRateFactory(project=project, name="VAT", jurisdiction="FR")

    body = api.patch(
        f"/v1/tax-rates/{rate.public_id}", {"name": "TVA", "is_default": True}, format="json"
    ).json()

    assert (body["name"], body["jurisdiction"], body["is_default"], body["percentage"]) == (
        "TVA",
        "FR",
        True,
        "20",
    )
    event = Event.objects.get(type="tax_rate.updated")
    assert event.data["name"] == "TVA"
    assert AuditLogEntry.objects.get(action="tax_rate.updated").changes == {
        "name": ["VAT", "TVA"],
        "is_default": ["False", "True"],
    }


@pytest.mark.parametrize("field", ["percentage", "inclusive"])
def test_percentage_and_inclusive_are_fixed(api, project, field):
    rate = TaxRateFactory(project=project)

    response = api.patch(f"/v1/tax-rates/{rate.public_id}", {field: "10"}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (400, "unknown_field")
    rate.refresh_from_db()
    assert (rate.percentage, rate.inclusive) == (Decimal("20"), False)
    assert not Event.objects.filter(type__startswith="tax_rate.").exists()


def test_a_patch_to_the_same_values_records_nothing(api, project):
    rate = TaxRateFactory(project=project, name="VAT")

    assert api.patch(f"/v1/tax-rates/{rate.public_id}", {"name": "VAT"}, format="json").status_code == 200
    assert not Event.objects.filter(type__startswith="tax_rate.").exists()


def test_archive_once_records_once_and_an_archived_rate_does_not_change(api, project):
    rate = TaxRateFactory(project=project, is_default=True)

    first = api.post(f"/v1/tax-rates/{rate.public_id}/archive")
    again = api.post(f"/v1/tax-rates/{rate.public_id}/archive")
    patched = api.patch(f"/v1/tax-rates/{rate.public_id}", {"name": "X"}, format="json")

    assert first.status_code == again.status_code == 200
    assert first.json()["archived_at"] is not None
    assert first.json()["archived_at"] == again.json()["archived_at"]
    assert Event.objects.filter(type="tax_rate.archived").count() == 1
    assert (patched.status_code, patched.json()["error"]["code"]) == (422, "tax_rate_archived")
    assert list(tax_rates_default(project)) == []


def test_tax_rates_default_is_the_projects_defaults_in_use(project, other_project):
    vat = TaxRateFactory(project=project, is_default=True)
    TaxRateFactory(project=project, is_default=False)
    TaxRateFactory(project=other_project, is_default=True)

    assert list(tax_rates_default(project)) == [vat]


# --- customer tax settings --------------------------------------------------------------------------


def test_customer_tax_status_and_rates_round_trip(api, project):
    vat = TaxRateFactory(project=project, name="VAT")
    reduced = TaxRateFactory(project=project, name="Reduced", percentage=Decimal("5.5"))

    created = api.post(
        "/v1/customers",
        {"name": "Initech", "tax_status": "reverse_charge", "tax_rates": [vat.public_id]},
        format="json",
    ).json()
    patched = api.patch(
        f"/v1/customers/{created['id']}", {"tax_rates": [reduced.public_id, vat.public_id]}, format="json"
    ).json()

    assert (created["tax_status"], created["tax_rates"]) == ("reverse_charge", [vat.public_id])
    assert patched["tax_status"] == "reverse_charge"
    assert sorted(patched["tax_rates"]) == sorted([vat.public_id, reduced.public_id])
    assert Event.objects.get(type="customer.created").data["tax_rates"] == [vat.public_id]
    assert sorted(Event.objects.get(type="customer.updated").data["tax_rates"]) == sorted(
        [vat.public_id, reduced.public_id]
    )


def test_a_customer_defaults_to_taxable_without_rates(api):
    body = api.post("/v1/customers", {"name": "Initech"}, format="json").json()

    assert (body["tax_status"], body["tax_rates"]) == ("taxable", [])


def test_clearing_a_customers_rates(api, project):
    customer = CustomerFactory(project=project)
    customer.tax_rates.set([TaxRateFactory(project=project)])

    body = api.patch(f"/v1/customers/{customer.public_id}", {"tax_rates": []}, format="json").json()

    assert body["tax_rates"] == []
    assert AuditLogEntry.objects.get(action="customer.updated").changes["tax_rates"][1] == ""


def test_customer_rates_refusals_change_nothing(api, project, other_project):
    customer = CustomerFactory(project=project)
    archived = TaxRateFactory(project=project)
    api.post(f"/v1/tax-rates/{archived.public_id}/archive")
    theirs = TaxRateFactory(project=other_project)
    Event.objects.all().delete()

    responses = [
        api.patch(f"/v1/customers/{customer.public_id}", {"tax_rates": [archived.public_id]}, format="json"),
        api.patch(f"/v1/customers/{customer.public_id}", {"tax_rates": [theirs.public_id]}, format="json"),
        api.post("/v1/customers", {"name": "N", "tax_rates": ["txr_nope"]}, format="json"),
        api.post("/v1/customers", {"name": "N", "tax_status": "zero"}, format="json"),
    ]

    assert [(r.status_code, r.json()["error"]["code"], r.json()["error"]["param"]) for r in responses] == [
        (422, "tax_rate_archived", "tax_rates[0]"),
        (422, "not_found", "tax_rates[0]"),
        (422, "not_found", "tax_rates[0]"),
        (400, "invalid_choice", "tax_status"),
    ]
    assert list(customer.tax_rates.all()) == []
    assert Customer.objects.count() == 1
    assert not Event.objects.filter(type__startswith="customer.").exists()
