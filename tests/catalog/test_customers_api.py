import pytest

from catalog.models import Customer
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def test_create_defaults_to_the_projects_currency_and_zone_and_the_public_id(api, project):
    project.currency, project.timezone = "EUR", "Europe/Berlin"
    project.save()

    body = api.post("/v1/customers", {"name": "Initech", "email": "ap@initech.example"}, format="json").json()

    assert body["id"].startswith("cus_")
    assert (body["external_id"], body["currency"], body["timezone"]) == (body["id"], "EUR", "Europe/Berlin")
    event = Event.objects.get(type="customer.created")
    assert (event.object_id, event.data["email"]) == (body["id"], "ap@initech.example")


def test_full_customer_round_trip(api):
    sent = {
        "external_id": "acct-42",
        "name": "Initech",
        "email": "ap@initech.example",
        "billing_address": {
            "line1": "1 Main St",
            "city": "Austin",
            "state": "TX",
            "postal_code": "78701",
            "country": "US",
        },
        "tax_id": "US123",
        "currency": "USD",
        "timezone": "America/Chicago",
        "processor_customer_id": "cus_stripe_1",
        "invoice_delivery": "review",
        "metadata": {"crm": "hubspot-9"},
    }

    body = api.post("/v1/customers", sent, format="json").json()

    assert {key: body[key] for key in sent} == {
        **sent,
        "billing_address": sent["billing_address"],
    }


def test_lookup_by_external_id_and_email(api, project):
    CustomerFactory(project=project, external_id="acct-1", email="one@example.com")
    wanted = CustomerFactory(project=project, external_id="acct-2", email="Two@Example.com")

    by_external = api.get("/v1/customers?external_id=acct-2").json()["results"]
    by_email = api.get("/v1/customers?email=two@example.com").json()["results"]

    assert [c["id"] for c in by_external] == [c["id"] for c in by_email] == [wanted.public_id]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"currency": "XYZ"}, "invalid_currency", "currency"),
        ({"timezone": "Moon/Base"}, "invalid_timezone", "timezone"),
        ({"billing_address": {"country": "Narnia"}}, "invalid_country", "billing_address.country"),
        ({"billing_address": {"planet": "Mars"}}, "unknown_field", "billing_address.planet"),
        ({"nmae": "typo"}, "unknown_field", "nmae"),
        ({"email": "not-an-email"}, "invalid_email", "email"),
        ({"email": '"john doe"@example.com'}, "invalid_email", "email"),
        ({"invoice_delivery": "fax"}, "invalid_choice", "invoice_delivery"),
    ],
)
def test_invalid_customers_are_refused_and_nothing_is_created(api, body, code, param):
    response = api.post("/v1/customers", {"name": "X", **body}, format="json")

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        400,
        code,
        param,
    )
    assert not Customer.objects.exists()
    assert not Event.objects.filter(type__startswith="customer.").exists()


def test_duplicate_external_id_is_409(api, project):
    CustomerFactory(project=project, external_id="acct-1")

    response = api.post("/v1/customers", {"external_id": "acct-1"}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "external_id_taken")
    assert Customer.objects.count() == 1


def test_the_same_external_id_in_another_project_is_fine(api, other_project):
    CustomerFactory(project=other_project, external_id="acct-1")

    assert api.post("/v1/customers", {"external_id": "acct-1"}, format="json").status_code == 201


def test_update_records_the_event_and_only_changes_what_it_names(api, project):
    customer = CustomerFactory(project=project, name="Old", email="old@example.com")

    body = api.patch(f"/v1/customers/{customer.public_id}", {"name": "New"}, format="json").json()

    assert (body["name"], body["email"]) == ("New", "old@example.com")
    assert Event.objects.filter(type="customer.updated", object_id=customer.public_id).count() == 1


def test_a_customer_with_a_subscription_cannot_be_deleted(api, project):
    customer = CustomerFactory(project=project)
    subscribe(customer, make_plan(project))
    unused = CustomerFactory(project=project)

    refused = api.delete(f"/v1/customers/{customer.public_id}")
    deleted = api.delete(f"/v1/customers/{unused.public_id}")

    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "in_use")
    assert deleted.status_code == 204
    assert list(Customer.objects.values_list("pk", flat=True)) == [customer.pk]


def test_items_lists_base_fees_fixed_fees_and_metered_charges_of_active_subscriptions(api, project):
    customer = CustomerFactory(project=project)
    calls = MeterFactory(project=project, code="api_calls", name="API calls")
    plan = make_plan(
        project,
        name="Pro",
        base_fee="49",
        charges=[
            {"meter": calls, "pricing_model": "per_unit", "unit_price": "0.002"},
            {"kind": "fixed", "name": "Support", "unit_price": "100", "timing": "in_advance"},
        ],
    )
    subscription = subscribe(customer, plan)
    ended = subscribe(customer, make_plan(project, base_fee="5"))
    api.patch(f"/v1/subscriptions/{ended.public_id}", {"status": "canceled"}, format="json")

    items = api.get(f"/v1/customers/{customer.public_id}/items").json()["results"]

    charges = list(plan.charges.all())
    assert items == [
        {"id": plan.public_id, "type": "base_fee", "name": "Pro base fee", "meter": None, "subscription": subscription.public_id,
         "plan": plan.public_id, "currency": "USD", "pricing": {"unit_price": "49", "timing": "in_advance"}},
        {"id": charges[0].public_id, "type": "usage", "name": "API calls", "meter": "api_calls", "subscription": subscription.public_id,
         "plan": plan.public_id, "currency": "USD", "pricing": items[1]["pricing"]},
        {"id": charges[1].public_id, "type": "fixed_fee", "name": "Support", "meter": None, "subscription": subscription.public_id,
         "plan": plan.public_id, "currency": "USD", "pricing": items[2]["pricing"]},
    ]  # fmt: skip
    assert (items[1]["pricing"]["pricing_model"], items[1]["pricing"]["unit_price"]) == ("per_unit", "0.002")
    assert (items[2]["pricing"]["kind"], items[2]["pricing"]["unit_price"]) == ("fixed", "100")


def test_customer_routes_take_the_id_or_the_external_id(api, project, other_project):
    customer = CustomerFactory(project=project, external_id="cus_8fq")
    CustomerFactory(project=other_project, external_id="acct-7")

    by_external = api.get("/v1/customers/cus_8fq")
    by_id = api.get(f"/v1/customers/{customer.public_id}/items")
    theirs = api.get("/v1/customers/acct-7")

    assert (by_external.status_code, by_external.json()["id"]) == (200, customer.public_id)
    assert by_id.status_code == 200
    assert (theirs.status_code, theirs.json()["error"]["message"]) == (404, "No such customer: 'acct-7'.")
