"""POST /v1/usage: every field of an event counts or is refused. The aliases other billing APIs'
clients send, the subscription an event may name, the product that picks its meter, and the value
a counting meter does without."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from meters.ingestion import EVENT_FIELDS
from meters.models import Aggregation, UnmatchedReason
from tests.catalog.factories import CustomerFactory, MeterFactory, ProductFactory, make_plan, subscribe
from tests.meters.conftest import JANUARY, NOW, stored
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def _refused(response, status: int, code: str, param: str) -> None:
    """The request was refused as a whole with this error; the caller checks nothing was stored."""
    assert response.status_code == status, response.content
    body = response.json()
    assert (body["error"]["code"], body["error"]["param"]) == (code, param)
    assert [(r["status"], r["code"], r["param"]) for r in body["results"]] == [("rejected", code, param)]


def _nothing_stored(project) -> None:
    assert stored(project) == []
    assert not Event.objects.filter(project=project, type="usage.recorded").exists()


# --- unknown fields ---------------------------------------------------------------------------------


def test_an_unknown_field_refuses_the_event_and_names_the_field(project, subscription, ingest):
    response = ingest({"customer": "cus_8fq", "value": 1, "region": "eu"})

    _refused(response, 400, "unknown_field", "events[0].region")
    assert response.json()["error"]["message"] == "Unknown field 'region': send your own data in properties."
    _nothing_stored(project)


def test_every_unknown_field_is_named_and_the_rest_of_a_batch_is_stored(project, subscription, ingest):
    response = ingest(
        [
            {"customer": "cus_8fq", "value": 1, "userId": "u1", "plan": "pro"},
            {"customer": "cus_8fq", "value": 2, "properties": {"userId": "u1", "plan": "pro"}},
        ]
    )

    assert response.status_code == 200
    assert response.json()["results"][0] == {
        "index": 0,
        "status": "rejected",
        "code": "unknown_field",
        "message": "Unknown fields 'userId', 'plan': send your own data in properties.",
        "param": "events[0].userId",
    }
    [event] = stored(project)
    assert (event.value, event.properties) == (Decimal(2), {"userId": "u1", "plan": "pro"})


def test_the_published_event_schema_lists_exactly_the_fields_read(client):
    schema = client.get("/v1/openapi.json").json()
    request = schema["paths"]["/v1/usage"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    event = request["oneOf"][0]

    assert event["additionalProperties"] is False
    assert set(event["properties"]) == EVENT_FIELDS
    assert {"required": ["stripeCustomerId"]} in event["anyOf"]
    assert {"required": ["subscription_id"]} in event["anyOf"]
    assert "required" not in event  # value may be left out for a counting meter
    assert {"required": ["timestamp", "occurred_at"]} in event["not"]["anyOf"]


# --- aliases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"customer": "cus_8fq", "meter": "api_calls", "value": 3, "timestamp": "2026-01-10T08:00:00Z"},
        {"customer_id": "cus_8fq", "event_name": "api_calls", "units": 3, "occurred_at": "2026-01-10T08:00:00Z"},
        {"external_customer_id": "cus_8fq", "meter_id": "api_calls", "quantity": 3,
         "occurred_at": "2026-01-10T09:00:00+01:00"},
    ],
)  # fmt: skip
def test_aliases_name_the_same_fields(project, subscription, meter, ingest, fields):
    response = ingest(fields)

    assert response.json()["accepted"] == 1
    [event] = stored(project)
    assert (event.customer_external_id, event.meter_code, event.value) == ("cus_8fq", "api_calls", Decimal(3))
    assert event.timestamp == datetime(2026, 1, 10, 8, tzinfo=UTC)
    assert (event.customer, event.meter, event.subscription) == (subscription.customer, meter, subscription)


def test_a_customer_and_a_meter_may_be_named_by_their_ids(project, subscription, customer, meter, ingest):
    response = ingest({"customer_id": customer.public_id, "meter_id": meter.public_id, "value": 4})

    assert response.json()["accepted"] == 1
    [event] = stored(project)
    # As sent for the customer; the meter's code (what usage of a meter is listed and billed under).
    assert (event.customer_external_id, event.meter_code) == (customer.public_id, "api_calls")
    assert (event.customer, event.meter, event.subscription) == (customer, meter, subscription)


def test_meter_and_event_name_take_codes_only(project, subscription, meter, ingest):
    response = ingest({"customer": "cus_8fq", "meter": meter.public_id, "value": 4})

    assert response.json()["results"][0]["code"] == UnmatchedReason.UNKNOWN_METER
    assert stored(project)[0].meter_code == meter.public_id


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"customer": "cus_8fq", "value": 1, "timestamp": None, "occurred_at": "2026-01-10T00:00:00Z"},
         "events[0].occurred_at"),
        ({"customer": "cus_8fq", "customer_id": "cus_8fq", "value": 1}, "events[0].customer_id"),
        ({"customer_id": "cus_8fq", "stripeCustomerId": "cus_x", "value": 1}, "events[0].stripeCustomerId"),
        ({"subscription": "s", "subscription_id": "s", "value": 1}, "events[0].subscription_id"),
        ({"customer": "cus_8fq", "meter": "api_calls", "meter_id": "api_calls", "value": 1}, "events[0].meter_id"),
        ({"customer": "cus_8fq", "productId": "p", "product_item": None, "value": 1}, "events[0].product_item"),
    ],
)  # fmt: skip
def test_a_field_and_its_alias_together_are_refused(project, subscription, ingest, event, param):
    _refused(ingest(event), 400, "conflicting_fields", param)
    _nothing_stored(project)


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"value": 1}, "missing_customer", "events[0].customer"),
        ({"customer": None, "value": 1}, "invalid_customer", "events[0].customer"),
        ({"stripeCustomerId": "", "value": 1}, "invalid_customer", "events[0].stripeCustomerId"),
        ({"customer": "cus_8fq", "subscription": None, "value": 1}, "invalid_subscription", "events[0].subscription"),
        ({"subscription_id": 42, "value": 1}, "invalid_subscription", "events[0].subscription_id"),
        ({"customer": "cus_8fq", "meter_id": "m" * 101, "value": 1}, "invalid_meter", "events[0].meter_id"),
        ({"customer": "cus_8fq", "productId": ["p"], "value": 1}, "invalid_product", "events[0].productId"),
        ({"customer": "cus_8fq", "value": 1, "occurred_at": "soon"}, "invalid_timestamp", "events[0].occurred_at"),
    ],
)  # fmt: skip
def test_references_of_the_wrong_shape_are_400(project, subscription, ingest, event, code, param):
    _refused(ingest(event), 400, code, param)
    _nothing_stored(project)


# --- the processor's customer ID --------------------------------------------------------------------


def test_stripe_customer_id_names_the_customer_by_its_processor_id(project, subscription, customer, ingest):
    customer.processor_customer_id = "cus_Q1w2E3r4"
    customer.save()

    response = ingest({"stripeCustomerId": "cus_Q1w2E3r4", "value": 150})

    assert response.json()["accepted"] == 1
    [event] = stored(project)
    assert (event.customer_external_id, event.customer, event.subscription) == (
        "cus_Q1w2E3r4", customer, subscription,
    )  # fmt: skip


def test_an_unknown_processor_id_is_kept_as_such(project, subscription, ingest):
    response = ingest({"stripeCustomerId": "cus_Unknown", "meter": "api_calls", "value": 1})

    assert response.json()["results"][0]["code"] == UnmatchedReason.UNKNOWN_PROCESSOR_CUSTOMER
    [event] = stored(project)
    assert (event.customer_external_id, event.unmatched_reason) == (
        "cus_Unknown",
        "unknown_processor_customer",
    )


def test_a_processor_id_two_customers_share_is_refused(project, subscription, customer, ingest):
    CustomerFactory(project=project, processor_customer_id="cus_Shared")
    customer.processor_customer_id = "cus_Shared"
    customer.save()

    _refused(
        ingest({"stripeCustomerId": "cus_Shared", "value": 1}),
        422,
        "ambiguous_customer",
        "events[0].stripeCustomerId",
    )
    _nothing_stored(project)


# --- the subscription an event names -----------------------------------------------------------------


@pytest.fixture
def two_subscriptions(project, customer, meter, plan):
    """Two subscriptions of the customer pricing the same meter: unnamed, the earlier one wins."""
    first = subscribe(customer, plan, starts_at=JANUARY, external_reference="crm-1")
    second = subscribe(
        customer, make_plan(project, charges=[{"meter": meter, "unit_price": "0.02"}]), starts_at=JANUARY,
        external_reference="crm-2",
    )  # fmt: skip
    return first, second


@pytest.mark.parametrize("by", ["public_id", "external_reference"])
def test_the_named_subscription_is_the_one_billed(project, customer, meter, two_subscriptions, ingest, by):
    first, second = two_subscriptions

    response = ingest([
        {"subscription": getattr(second, by), "meter": "api_calls", "value": 5},
        {"customer": "cus_8fq", "meter": "api_calls", "value": 6},
    ])  # fmt: skip

    assert response.json()["accepted"] == 2
    pinned, unnamed = stored(project)
    assert (pinned.subscription, pinned.customer, pinned.meter) == (second, customer, meter)
    # The customer is the subscription's: its external_id is stored, as if the event had named it.
    assert (pinned.customer_external_id, pinned.unmatched_reason, pinned.matched_at) == ("cus_8fq", "", NOW)
    assert unnamed.subscription == first


def test_the_customer_named_beside_the_subscription_must_be_its_own(project, two_subscriptions, ingest):
    _, second = two_subscriptions
    other = CustomerFactory(project=project, external_id="other")

    for customer in (other.external_id, "nobody"):
        response = ingest({"customer": customer, "subscription": second.public_id, "value": 1})
        _refused(response, 422, "subscription_customer_mismatch", "events[0].customer")
    assert ingest({"customer_id": "cus_8fq", "subscription_id": "crm-2", "value": 1}).json()["accepted"] == 1
    assert [event.subscription for event in stored(project)] == [second]


def test_the_meter_is_inferred_from_the_named_subscription_only(project, customer, meter, ingest):
    storage = MeterFactory(project=project, code="storage_gb")
    subscribe(customer, make_plan(project, charges=[{"meter": meter, "unit_price": "1"}]), starts_at=JANUARY)
    storage_only = subscribe(
        customer, make_plan(project, charges=[{"meter": storage, "unit_price": "1"}]), starts_at=JANUARY
    )

    assert ingest({"customer": "cus_8fq", "value": 1}).json()["results"][0]["code"] == "ambiguous_meter"
    response = ingest({"subscription": storage_only.public_id, "value": 1})

    assert response.json()["accepted"] == 1
    [event] = stored(project)
    assert (event.meter, event.subscription) == (storage, storage_only)


@pytest.mark.parametrize(
    ("reference", "status", "code"),
    [("sub_nope", 404, "unknown_subscription"), ("crm-shared", 422, "ambiguous_subscription")],
)
def test_a_subscription_that_names_no_single_one_is_refused(
    project, customer, plan, ingest, reference, status, code
):
    subscribe(customer, plan, starts_at=JANUARY, external_reference="crm-shared")
    subscribe(customer, plan, starts_at=JANUARY, external_reference="crm-shared")

    # Refused even though the project keeps unmatched usage: kept without its subscription, a
    # rematch could bill the event on another one.
    _refused(ingest({"subscription_id": reference, "value": 1}), status, code, "events[0].subscription_id")
    _nothing_stored(project)


def test_a_named_subscription_takes_only_what_it_prices_then(project, customer, meter, plan, ingest):
    from subscriptions.services import subscription_pause

    MeterFactory(project=project, code="storage_gb")
    subscription = subscribe(customer, plan, starts_at=datetime(2026, 1, 5, tzinfo=UTC))
    events = [
        {"subscription": subscription.public_id, "meter": "storage_gb", "value": 1},  # not in its plan
        {"subscription": subscription.public_id, "value": 1, "timestamp": "2026-01-04T23:59:59Z"},  # before
    ]
    for event in events:
        _refused(ingest(event), 422, "not_priced_by_subscription", "events[0].subscription")
    subscription_pause(subscription=subscription, actor=None)
    response = ingest({"subscription": subscription.public_id, "meter": "api_calls", "value": 1})
    _refused(response, 422, "not_priced_by_subscription", "events[0].subscription")
    _nothing_stored(project)


def test_a_named_subscription_with_an_unknown_meter_is_refused_not_kept(project, subscription, ingest):
    response = ingest({"subscription": subscription.public_id, "meter": "api_calls_typo", "value": 1})

    _refused(response, 404, "unknown_meter", "events[0].meter")
    _nothing_stored(project)


# --- the product an event names ----------------------------------------------------------------------


@pytest.fixture
def product(project, meter):
    product = ProductFactory(project=project, code="pro-api")
    make_plan(project, product=product, charges=[{"meter": meter, "unit_price": "0.01"}])
    return product


@pytest.mark.parametrize("field", ["productId", "product_item"])
@pytest.mark.parametrize("by", ["code", "public_id"])
def test_a_product_picks_the_meter_its_plans_price(project, subscription, meter, product, ingest, field, by):
    response = ingest({"customer": "cus_8fq", field: getattr(product, by), "value": 7})

    assert response.json()["accepted"] == 1
    [event] = stored(project)
    assert (event.meter_code, event.meter, event.subscription) == ("api_calls", meter, subscription)


def test_a_product_and_a_meter_must_agree(project, subscription, product, ingest):
    MeterFactory(project=project, code="storage_gb")

    assert (
        ingest({"customer": "cus_8fq", "productId": "pro-api", "meter": "api_calls", "value": 1}).json()[
            "accepted"
        ]
        == 1
    )
    response = ingest({"customer": "cus_8fq", "productId": "pro-api", "meter": "storage_gb", "value": 1})
    _refused(response, 422, "meter_not_in_product", "events[0].meter")
    assert len(stored(project)) == 1


def test_a_product_that_names_no_single_meter_is_refused(project, subscription, meter, product, ingest):
    storage = MeterFactory(project=project, code="storage_gb")
    make_plan(project, product=product, charges=[{"meter": storage, "unit_price": "1"}])
    flat = ProductFactory(project=project, code="support")
    make_plan(project, product=flat, base_fee="100")

    _refused(ingest({"customer": "cus_8fq", "productId": "pro-api", "value": 1}), 422, "ambiguous_meter",
             "events[0].meter")  # fmt: skip
    _refused(ingest({"customer": "cus_8fq", "productId": "support", "value": 1}), 422, "product_not_metered",
             "events[0].productId")  # fmt: skip
    _refused(ingest({"customer": "cus_8fq", "productId": "nope", "value": 1}), 404, "unknown_product",
             "events[0].productId")  # fmt: skip
    _nothing_stored(project)


# --- the value a counting meter does without ----------------------------------------------------------


@pytest.mark.parametrize("aggregation", [Aggregation.COUNT, Aggregation.UNIQUE_COUNT])
def test_a_meter_that_counts_events_takes_them_without_a_value(project, customer, ingest, aggregation):
    logins = MeterFactory(project=project, code="logins", aggregation=aggregation, property="user")
    subscribe(customer, make_plan(project, charges=[{"meter": logins, "unit_price": "1"}]), starts_at=JANUARY)

    response = ingest({"customer": "cus_8fq", "meter": "logins", "properties": {"user": "u1"}})

    assert response.json()["accepted"] == 1
    [event] = stored(project)
    assert (event.value, event.meter) == (Decimal(1), logins)


def test_a_meter_that_adds_values_needs_one(project, subscription, ingest):
    _refused(ingest({"customer": "cus_8fq", "meter": "api_calls"}), 422, "missing_value", "events[0].value")
    _refused(ingest({"customer": "cus_8fq", "meter": "unknown"}), 422, "missing_value", "events[0].value")
    _nothing_stored(project)
