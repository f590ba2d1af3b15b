"""Every object route answers 404 for an object of another project: never 403, never 200.

The table below must name every `/v1/` route that takes an `{id}`: the first test fails when a
new route is added without a row here. A row is the route's URL prefix and a function that
creates an object of the given project and returns its public ID.
"""

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import transaction
from django.urls import URLResolver, get_resolver

from accounts.models import Project
from invoicing.credits import credits_grant
from invoicing.services import credit_note_create
from payments.models import Payout
from payments.services import payment_record
from tests.accounts.factories import make_api_key
from tests.catalog.factories import (
    ContractFactory,
    CouponFactory,
    CustomerFactory,
    MeterFactory,
    ProductFactory,
    TaxRateFactory,
    make_plan,
    subscribe,
)
from tests.invoicing.factories import issued_invoice
from tests.webhooks.factories import make_endpoint
from webhooks.services import event_record

pytestmark = pytest.mark.django_db


def _api_key(project: Project) -> str:
    return make_api_key(project)[0].public_id


def _event(project: Project) -> str:
    with transaction.atomic():
        return event_record(project=project, type="test.created", data={}).public_id


def _meter(project: Project) -> str:
    return MeterFactory(project=project).public_id


def _product(project: Project) -> str:
    return ProductFactory(project=project).public_id


def _plan(project: Project) -> str:
    return make_plan(project).public_id


def _customer(project: Project) -> str:
    return CustomerFactory(project=project).public_id


def _subscription(project: Project) -> str:
    return subscribe(CustomerFactory(project=project), make_plan(project)).public_id


def _contract(project: Project) -> str:
    return ContractFactory(project=project).public_id


def _tax_rate(project: Project) -> str:
    return TaxRateFactory(project=project).public_id


def _coupon(project: Project) -> str:
    return CouponFactory(project=project).public_id


def _webhook_endpoint(project: Project) -> str:
    return make_endpoint(project).public_id


def _invoice(project: Project) -> str:
    return issued_invoice(project).public_id


def _credit_note(project: Project) -> str:
    return credit_note_create(invoice=issued_invoice(project), actor=None, reason="duplicate").public_id


def _payment(project: Project) -> str:
    invoice = issued_invoice(project)
    return payment_record(invoice=invoice, amount=invoice.total, actor=None).public_id


def _credit_grant(project: Project) -> str:
    customer = CustomerFactory(project=project)
    return credits_grant(customer=customer, currency="USD", amount=Decimal("10"), actor=None).public_id


def _payout(project: Project) -> str:
    return Payout.objects.create(project=project, processor="manual", currency="USD", amount=1).public_id


OBJECT_ROUTES: dict[str, Callable[[Project], str]] = {
    "api-keys": _api_key,
    "activity": _event,
    "meters": _meter,
    "products": _product,
    "plans": _plan,
    "customers": _customer,
    "subscriptions": _subscription,
    "contracts": _contract,
    "tax-rates": _tax_rate,
    "coupons": _coupon,
    "invoices": _invoice,
    "credit-notes": _credit_note,
    "credit-grants": _credit_grant,
    "webhook-endpoints": _webhook_endpoint,
    "payments": _payment,
    "payouts": _payout,
}


def _object_routes() -> set[str]:
    """The resource names of /v1/ routes whose path has an id, e.g. 'api-keys'."""
    found = set()

    def walk(patterns, prefix=""):
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif route.startswith("v1/") and "(?P<id>" in route:
                found.add(route.split("/")[1])

    walk(get_resolver().url_patterns)
    return found


def test_every_object_route_is_in_the_table():
    assert _object_routes() == set(OBJECT_ROUTES)


@pytest.mark.parametrize("resource", sorted(OBJECT_ROUTES))
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_projects_object_is_404(resource, method, project, other_project, api):
    theirs = OBJECT_ROUTES[resource](other_project)

    response = getattr(api, method)(f"/v1/{resource}/{theirs}", {}, format="json")

    assert response.status_code in {404, 405}
    if response.status_code == 405:
        assert method != "get"  # the route has no such method at all, for anyone
    else:
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("resource", sorted(OBJECT_ROUTES))
def test_own_object_is_found(resource, project, api):
    mine = OBJECT_ROUTES[resource](project)

    assert api.get(f"/v1/{resource}/{mine}").status_code == 200


# Routes below an object (`/v1/customers/{id}/usage`): another project's object is 404 there too.
SUB_ROUTES: dict[str, Callable[[Project], str]] = {
    "customers/{id}/usage": _customer,
    "customers/{id}/payment-methods": _customer,
    "customers/{id}/credits": _customer,
    "customers/{id}/coupons": _customer,
    "invoices/{id}/pdf": _invoice,
    "credit-notes/{id}/pdf": _credit_note,
}


@pytest.mark.parametrize("route", sorted(SUB_ROUTES))
def test_another_projects_object_is_404_below_it(route, project, other_project, api):
    theirs = SUB_ROUTES[route](other_project)

    response = api.get("/v1/" + route.format(id=theirs))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert api.get("/v1/" + route.format(id=SUB_ROUTES[route](project))).status_code == 200
