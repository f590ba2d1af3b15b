"""Reproducers from the fuzzing and bad-input runs against `make run`, each through the API: each
once answered 500, lost a request body, or disagreed with the OpenAPI document."""

import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from accounts.models import ApiKey
from catalog.models import Customer
from invoicing.models import Invoice
from meters.models import Meter, UsageEvent
from subscriptions.models import Subscription
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from webhooks.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client):
    return client.get("/v1/openapi.json").json()


# --- 1. time offsets beyond ±15:59 (PostgreSQL refuses them in its own parser) ---------------


def test_list_filters_take_any_offset_and_compare_in_utc(api, project):
    with time_machine.travel(datetime(2026, 1, 1, 12, tzinfo=UTC), tick=False):
        early = CustomerFactory(project=project)
    with time_machine.travel(datetime(2026, 1, 2, 12, tzinfo=UTC), tick=False):
        late = CustomerFactory(project=project)

    # 2026-01-02T00:00:00+16:00 is 2026-01-01T08:00:00Z.
    after = api.get("/v1/customers", {"created_after": "2026-01-02T00:00:00+16:00"})
    before = api.get("/v1/customers", {"created_before": "2026-01-02T00:00:00-16:30"})

    assert [c["id"] for c in after.json()["results"]] == [late.public_id, early.public_id]
    assert [c["id"] for c in before.json()["results"]] == [late.public_id, early.public_id]
    assert api.get("/v1/invoices", {"period_start_after": "2026-01-01T00:00:00+16:00"}).status_code == 200
    assert api.get("/v1/activity", {"created_before": "2026-01-01T00:00:00+23:59"}).status_code == 200


# --- 2. NUL and lone surrogates inside JSON values -------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/meters", {"code": "m", "group_by": ["region\u0000"]}, "group_by[0]"),
        ("/v1/meters", {"code": "m", "filters": [{"property": "a\u0000", "operator": "eq", "value": 1}]},
         "filters[0].property"),
        ("/v1/meters", {"code": "m", "filters": [{"property": "a", "operator": "eq", "value": "\u0000"}]},
         "filters[0].value"),
        ("/v1/customers", {"metadata": {"crm": "a\u0000"}}, "metadata.crm"),
        ("/v1/customers", {"metadata": {"\u0000": "a"}}, "metadata"),
        ("/v1/customers", {"metadata": {"crm": "\ud800"}}, "metadata.crm"),
    ],
)  # fmt: skip
def test_text_that_cannot_be_stored_inside_json_values_is_400(api, path, body, param):
    response = api.post(path, json.dumps(body).encode(), content_type="application/json")

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        400,
        "invalid_characters",
        param,
    )
    assert not Meter.objects.exists()
    assert not Customer.objects.exists()


def test_a_lone_surrogate_in_subscription_metadata_is_400(api, project):
    customer, plan = CustomerFactory(project=project), make_plan(project)
    body = {"customer": customer.public_id, "plan": plan.public_id, "metadata": {"note": "\ud800"}}

    response = api.post("/v1/subscriptions", json.dumps(body).encode(), content_type="application/json")

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_characters")
    assert not Subscription.objects.exists()


# --- 3 and 4. dates at the calendar's edges, and the lower bound -------------------------------


@pytest.mark.parametrize(
    ("timezone", "starts_at"),
    [
        ("UTC", "9999-12-31T23:00:00Z"),
        ("America/New_York", "0001-01-01T00:00:00Z"),
        ("UTC", "0001-01-01T00:00:00Z"),
        ("UTC", "1999-12-31T23:59:59Z"),
        ("UTC", "2100-01-01T00:00:00Z"),
    ],
)
def test_dates_outside_the_range_are_422_and_bill_nothing(api, project, timezone, starts_at):
    customer, plan = CustomerFactory(project=project, timezone=timezone), make_plan(project, base_fee="10")

    response = api.post(
        "/v1/subscriptions", {"customer": customer.public_id, "plan": plan.public_id, "starts_at": starts_at},
        format="json",
    )  # fmt: skip

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        422,
        "date_out_of_range",
        "starts_at",
    )
    assert not Subscription.objects.exists()
    assert not Invoice.objects.exists()


def test_the_range_is_inclusive_at_its_start(api, project):
    customer, plan = CustomerFactory(project=project), make_plan(project)

    response = api.post(
        "/v1/subscriptions",
        {"customer": customer.public_id, "plan": plan.public_id, "starts_at": "2000-01-01T00:00:00Z"},
        format="json",
    )

    assert response.status_code == 201


# --- 5. chunked bodies: read in full where the server decodes them, else 411 -----------------


def _chunked(api, method: str, path: str, body: dict, *, terminated: bool):
    data = json.dumps(body).encode()
    extra = {
        "CONTENT_LENGTH": "",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(data),
        "wsgi.input_terminated": terminated,
    }
    return getattr(api, method)(path, data, content_type="application/json", **extra)


def test_a_chunked_create_and_update_keep_every_field(api, project):
    created = _chunked(
        api, "post", "/v1/customers", {"external_id": "c1", "name": "Initech"}, terminated=True
    )
    changed = _chunked(api, "patch", "/v1/customers/c1", {"name": "Initech Ltd"}, terminated=True)

    assert (created.status_code, changed.status_code) == (201, 200)
    assert Customer.objects.get().name == "Initech Ltd"


def test_a_chunked_usage_event_is_accepted(api, project):
    subscribe(CustomerFactory(project=project, external_id="cus_8fq"),
              make_plan(project, charges=[{"meter": MeterFactory(project=project, code="calls"), "unit_price": "1"}]),
              starts_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip

    response = _chunked(api, "post", "/v1/usage", {"customer": "cus_8fq", "value": 3}, terminated=True)

    assert response.json()["accepted"] == 1
    assert UsageEvent.objects.get().value == 3


def test_a_chunked_body_the_server_cannot_read_is_411_and_changes_nothing(api, project):
    response = _chunked(api, "post", "/v1/customers", {"external_id": "c1"}, terminated=False)

    assert (response.status_code, response.json()["error"]["code"]) == (411, "length_required")
    assert not Customer.objects.exists()


# --- 6. the schema is the truth ----------------------------------------------------------------


def test_billable_items_answer_the_shape_the_schema_states(api, project, schema):
    CustomerFactory(project=project, external_id="acme")

    body = api.get("/v1/customers/acme/items").json()

    documented = schema["paths"]["/v1/customers/{id}/items"]["get"]["responses"]["200"]["content"]
    component = documented["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schema["components"]["schemas"][component]["properties"]["results"]["type"] == "array"
    assert body == {"results": []}


def test_a_cursor_the_list_did_not_hand_out_is_422_and_documented(api, schema):
    response = api.get("/v1/customers", {"cursor": "bm90IGEgY3Vyc29y"})

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        422,
        "invalid_cursor",
        "cursor",
    )
    assert "422" in schema["paths"]["/v1/customers"]["get"]["responses"]


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ({"limit": "null"}, "invalid_limit", "limit"),
        ({"limit": "0"}, "invalid_limit", "limit"),
        ({"limit": "101"}, "invalid_limit", "limit"),
        ({"created_after": ""}, "blank", "created_after"),
        ({"cursor": ""}, "blank", "cursor"),
        ({"archived": "maybe"}, "invalid_boolean", "archived"),
    ],
)
def test_query_parameters_the_schema_forbids_are_refused(api, query, code, param):
    response = api.get("/v1/meters", query)

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        400,
        code,
        param,
    )


def test_the_schema_bounds_limit_and_refuses_empty_query_values(schema):
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/v1/meters"]["get"]["parameters"]}

    assert (parameters["limit"]["minimum"], parameters["limit"]["maximum"]) == (1, 100)
    assert parameters["code"]["minLength"] == parameters["cursor"]["minLength"] == 1


def test_deleting_an_object_in_use_is_409_as_documented(api, project, schema):
    customer = CustomerFactory(project=project)
    subscribe(customer, make_plan(project))

    response = api.delete(f"/v1/customers/{customer.public_id}")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "in_use")
    assert "409" in schema["paths"]["/v1/customers/{id}"]["delete"]["responses"]


def test_an_empty_idempotency_key_is_refused_as_the_schema_says(api, schema):
    response = api.post("/v1/products", {"code": "p", "name": "P"}, format="json", HTTP_IDEMPOTENCY_KEY="")

    header = next(
        p for p in schema["paths"]["/v1/products"]["post"]["parameters"] if p["name"] == "Idempotency-Key"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_idempotency_key")
    assert header["schema"]["minLength"] == 1


@pytest.mark.parametrize(
    ("path", "body", "code", "param"),
    [
        ("/v1/customers", {"metadata": None}, "null", "metadata"),
        ("/v1/customers", {"name": 42}, "invalid_type", "name"),
        ("/v1/customers", {"id": "cus_mine"}, "unknown_field", "id"),
        ("/v1/meters", {"code": "m", "filters": None}, "null", "filters"),
        ("/v1/meters", {"code": "m", "whole_numbers_only": "true"}, "invalid_type", "whole_numbers_only"),
        ("/v1/api-keys", {"name": "k", "scopes": []}, "empty", "scopes"),
        ("/v1/plans", {"product": "prod_x", "code": "p", "name": "P", "interval_count": "1"}, "invalid_type",
         "interval_count"),
    ],
)  # fmt: skip
def test_bodies_the_schema_forbids_are_400(api, path, body, code, param, schema):
    before = (Customer.objects.count(), Meter.objects.count(), ApiKey.objects.count())

    response = api.post(path, body, format="json")

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        400,
        code,
        param,
    )
    assert (Customer.objects.count(), Meter.objects.count(), ApiKey.objects.count()) == before


def test_a_patch_to_a_post_only_route_is_405_whatever_key_it_carries(api, project):
    invoice_path = "/v1/products"
    api.post(invoice_path, {"code": "p", "name": "P"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    response = api.patch(invoice_path, {"name": "Q"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert (response.status_code, response.json()["error"]["code"]) == (405, "method_not_allowed")
    assert "POST" in response["Allow"]


def test_no_event_is_recorded_for_a_refused_request(api):
    before = Event.objects.count()  # the key's own api_key.created

    api.post("/v1/customers", {"metadata": {"a": {"nested": "no"}}}, format="json")

    assert Event.objects.count() == before


# --- found by an independent fuzzing and bad-input run ------------------------------------------


def test_a_number_in_properties_a_meter_could_sum_is_bounded_like_a_value(api, project):
    MeterFactory(project=project, code="gb", property="p")

    refused = api.post(
        "/v1/usage", {"customer": "c", "meter": "gb", "value": 1, "properties": {"p": 1e48}}, format="json"
    )
    nested = api.post(
        "/v1/usage",
        {"customer": "c", "meter": "gb", "value": 1, "properties": {"n": {"p": 1e48}}},
        format="json",
    )

    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "property_out_of_range")
    assert nested.status_code == 200  # only top-level properties are ever aggregated
    assert UsageEvent.objects.count() == 1


def test_an_integer_beyond_64_bits_in_properties_is_stored_exactly(api, project):
    response = api.post(
        "/v1/usage", b'{"customer": "c", "meter": "m", "value": 1, "properties": {"n": {"id": 18446744073709551616}}}',
        content_type="application/json",
    )  # fmt: skip

    assert response.status_code == 200
    assert UsageEvent.objects.get().properties == {"n": {"id": 18446744073709551616}}


def test_an_invoice_that_would_hold_more_than_its_columns_is_422_to_a_preview(api, project):
    meter = MeterFactory(project=project, code="calls")
    customer = CustomerFactory(project=project, external_id="big")
    subscription = subscribe(
        customer, make_plan(project, charges=[{"meter": meter, "unit_price": "100000000"}]),
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    with time_machine.travel(datetime(2026, 1, 10, tzinfo=UTC), tick=False):
        api.post("/v1/usage", {"customer": "big", "value": "99999999999999999999"}, format="json")
        response = api.post("/v1/invoices/preview", {"subscription": subscription.public_id}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (422, "amount_too_large")


@pytest.mark.postgres  # SQLite keeps decimals as doubles: it cannot hold a total this close to 10^16
def test_adjustments_stop_before_the_invoice_total_overflows(api, project):
    from tests.invoicing.factories import issued_invoice

    invoice = issued_invoice(project)
    invoice.status, invoice.total = "draft", Decimal("9999999999999999.99")  # the largest total it holds
    invoice.save()

    response = api.post(
        f"/v1/invoices/{invoice.public_id}/adjustments",
        {"amount": 1, "description": "d", "reason": "r"},
        format="json",
    )

    assert (response.status_code, response.json()["error"]["code"]) == (422, "amount_too_large")
    assert invoice.lines.count() == 1


@pytest.mark.parametrize("number", [b"1e400", b"-1E+999"])
def test_a_number_beyond_a_double_is_unreadable_json(api, number):
    body = b'{"code": "m", "filters": [{"property": "x", "operator": "gt", "value": ' + number + b"}]}"

    response = api.post("/v1/meters", body, content_type="application/json")

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")
    assert not Meter.objects.exists()


def test_a_refused_subscription_change_leaves_its_terms_unchanged(api, project):
    subscription = subscribe(CustomerFactory(project=project), make_plan(project))

    response = api.patch(
        f"/v1/subscriptions/{subscription.public_id}",
        {"external_reference": "X", "metadata": {"k": "v"}, "status": "active"},
        format="json",
    )

    subscription.refresh_from_db()
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_transition")
    assert (subscription.external_reference, subscription.metadata) == ("", {})
    assert not Event.objects.filter(type="subscription.updated").exists()


def test_requests_django_refuses_before_any_view_answer_in_the_envelope(api, client):
    wrong_host = client.get("/v1/customers", HTTP_HOST="evil.example")
    too_many = api.get("/v1/customers?" + "&".join(["a"] * 1001))

    assert (wrong_host.status_code, wrong_host.json()["error"]["code"]) == (400, "invalid_host")
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (400, "too_many_parameters")


def test_the_api_answers_json_whatever_accept_and_format_say(api):
    assert api.get("/v1/customers", HTTP_ACCEPT="text/html").status_code == 200
    assert api.get("/v1/customers", {"format": "xml"}).status_code == 200
    assert api.get("/v1/customers", HTTP_CONTENT_ENCODING="br").status_code == 200  # a GET's body is not read


def test_the_schema_is_openapi_3_1_without_nullable(schema):
    text = json.dumps(schema)

    assert schema["openapi"] == "3.1.0"
    assert '"nullable"' not in text
    assert schema["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["param"]["type"] == [
        "string",
        "null",
    ]


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        ("2026-01-01T00:00:00z", 200),
        ("2026-01-01t00:00:00Z", 200),
        ("2026-06-30T23:59:60Z", 200),
        ("2026-01-01T00:00:00.1234567Z", 200),
        ("2026-01-01", 200),
        ("2026-01-01T00:00:00", 200),
        ("2026-W01-1", 400),
        ("2026-001", 400),
        ("2026-01-01 00:00:00Z", 400),
        ("2026-01-01T00:00Z", 400),
        ("2026-01-01T24:00:00Z", 400),
        ("0000-01-01T00:00:00Z", 422),
    ],
)
def test_moments_are_read_as_rfc_3339_writes_them(api, sent, status):
    response = api.get("/v1/customers", {"created_after": sent})

    assert response.status_code == status, response.content


def test_an_idempotency_key_is_counted_in_characters(api):
    key = "é" * 200  # 400 bytes of UTF-8, 200 characters

    response = api.post(
        "/v1/products",
        {"code": "p", "name": "P"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key.encode().decode("latin-1"),
    )

    assert response.status_code == 201


def test_a_field_and_its_alias_are_one_field_even_when_one_is_null(api, project):
    response = api.post(
        "/v1/usage", {"customer": "c", "meter": "m", "value": 1, "units": None}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "conflicting_fields")


@pytest.mark.parametrize(
    ("tail", "status"),
    [(b"", 201), (b"gzip", 201), (b"garbage", 400)],
)
def test_gzip_members_are_read_in_full_and_trailing_bytes_refused(api, tail, status):
    import gzip

    body = json.dumps({"code": "p", "name": "P"}).encode()
    if tail == b"gzip":  # the same JSON split over two members
        compressed = gzip.compress(body[:5]) + gzip.compress(body[5:])
    else:
        compressed = gzip.compress(body) + tail

    response = api.post(
        "/v1/products", compressed, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )

    assert response.status_code == status


def test_a_webhook_url_port_out_of_range_is_refused(api, project):
    project.allow_private_webhook_urls = True
    project.save()

    response = api.post("/v1/webhook-endpoints", {"url": "http://127.0.0.1:99999/h"}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_url")


def test_a_patch_that_changes_nothing_records_nothing(api, project):
    customer = CustomerFactory(project=project, name="Initech")

    response = api.patch(f"/v1/customers/{customer.public_id}", {"name": "Initech"}, format="json")

    assert response.status_code == 200
    assert not Event.objects.filter(type="customer.updated").exists()


def test_text_is_stored_as_sent(api, project):
    from tests.invoicing.factories import issued_invoice

    invoice = issued_invoice(project)

    api.post(f"/v1/invoices/{invoice.public_id}/void", {"reason": "  padded  "}, format="json")

    assert Invoice.objects.get(pk=invoice.pk).void_reason == "  padded  "
