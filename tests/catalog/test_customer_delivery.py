"""A customer's invoice delivery fields through the API: locale, invoice addresses, copies."""

import pytest

from catalog.models import Customer

pytestmark = pytest.mark.django_db


def test_a_customer_takes_a_locale_and_invoice_addresses(api):
    response = api.post(
        "/v1/customers",
        {
            "external_id": "acme-gmbh", "locale": "de_DE",
            "invoice_emails": ["ap@acme.test", "cfo@acme.test", "ap@acme.test"], "invoice_cc": ["audit@acme.test"],
        },
        format="json",
    )  # fmt: skip

    assert response.status_code == 201
    body = response.json()
    assert (body["locale"], body["invoice_emails"], body["invoice_cc"]) == (
        "de_DE", ["ap@acme.test", "cfo@acme.test"], ["audit@acme.test"],
    )  # fmt: skip
    assert api.patch(f"/v1/customers/{body['id']}", {"locale": ""}, format="json").json()["locale"] == ""


@pytest.mark.parametrize(
    ("field", "value", "status", "code"),
    [
        ("locale", "xx_QQ", 422, "unknown_locale"),
        ("locale", "de-DE", 400, "invalid_locale"),
        ("locale", 7, 400, "invalid_type"),
        ("invoice_emails", ["not an address"], 400, "invalid_email"),
        ("invoice_emails", [f"a{n}@acme.test" for n in range(11)], 400, "max_length"),
        ("invoice_cc", [""], 400, "blank"),
    ],
)
def test_bad_delivery_fields_are_refused_and_nothing_is_created(api, field, value, status, code):
    response = api.post("/v1/customers", {"external_id": "x", field: value}, format="json")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"].startswith(field)
    assert not Customer.objects.exists()


def test_the_project_s_locale_is_checked_the_same_way(api):
    assert api.patch("/v1/project", {"locale": "fr_FR"}, format="json").json()["locale"] == "fr_FR"
    response = api.patch("/v1/project", {"locale": "xx_QQ"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (422, "unknown_locale")
    assert api.patch("/v1/project", {"locale": ""}, format="json").status_code == 400
