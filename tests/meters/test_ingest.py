"""POST /v1/usage as a client uses it: the request forms, the per-event results and what is stored."""

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from accounts.models import Project, Scope
from meters.models import UnmatchedReason, UsageEvent
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.conftest import api_client
from tests.meters.conftest import JANUARY, NOW, stored
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def _recorded(project) -> list[Event]:
    return list(Event.objects.filter(project=project, type="usage.recorded"))


# --- request forms (the seed pages' literal requests: test_seeds.py) -------------------------------


def test_events_wrapper_and_quantity_alias(project, subscription, ingest):
    response = ingest({"events": [{"customer": "cus_8fq", "meter": "api_calls", "quantity": "2.5"}]})

    assert response.json()["accepted"] == 1
    assert stored(project)[0].value == Decimal("2.5")


def test_gzip_body(project, subscription, ingest):
    body = gzip.compress(json.dumps([{"customer": "cus_8fq", "value": 7}]).encode())

    response = ingest.client.post(
        "/v1/usage", body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )

    assert response.status_code == 200
    assert stored(project)[0].value == 7


# --- fields ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2026-01-10T12:30:00+01:00", datetime(2026, 1, 10, 11, 30, tzinfo=UTC)),
        ("2026-01-10T11:30:00", datetime(2026, 1, 10, 11, 30, tzinfo=UTC)),  # naive is UTC
        ("2026-01-10", datetime(2026, 1, 10, tzinfo=UTC)),
        ("2026-01-15T12:05:00Z", NOW + timedelta(minutes=5)),  # 5 minutes ahead is allowed
    ],
)
def test_timestamps_are_stored_in_utc(project, subscription, ingest, sent, expected):
    assert ingest({"customer": "cus_8fq", "value": 1, "timestamp": sent}).json()["accepted"] == 1
    assert stored(project)[0].timestamp == expected


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (1240, Decimal(1240)),
        ("0.000000000001", Decimal("0.000000000001")),
        ("-0", Decimal(0)),
        (0.1 + 0.2, Decimal("0.3")),  # a binary double's noise beyond 12 places is rounded away
        ("1e3", Decimal(1000)),
        (2.0, Decimal(2)),
    ],
)
def test_values(project, subscription, ingest, sent, expected):
    assert ingest({"customer": "cus_8fq", "value": sent}).json()["accepted"] == 1
    assert stored(project)[0].value == expected


@pytest.mark.postgres
def test_decimal_strings_are_exact_to_the_last_place(project, subscription, ingest):
    ingest({"customer": "cus_8fq", "value": "99999999999999999999.999999999999"})

    assert stored(project)[0].value == Decimal("99999999999999999999.999999999999")


def test_properties_are_stored_as_sent(project, subscription, ingest):
    properties = {"region": "eu", "gb": 1.5, "tags": ["a", {"b": None}], "ok": True, "é": "ü",
                  "deep": {"a": {"b": {"c": [1]}}}}  # fmt: skip

    ingest({"customer": "cus_8fq", "value": 1, "properties": properties})

    assert stored(project)[0].properties == properties


# --- rejections: the event is reported, nothing is stored ------------------------------------------

# (status of a request holding only this event, code, param, event): 400 when the event does not
# have the documented shape, 422 when it has and cannot be taken.
REJECTIONS = [
    (400, "missing_customer", "events[0].customer", {"value": 1}),
    (400, "invalid_customer", "events[0].customer", {"customer": 42, "value": 1}),
    (400, "invalid_customer", "events[0].customer", {"customer": "", "value": 1}),
    (400, "invalid_customer", "events[0].customer", {"customer": "x" * 256, "value": 1}),
    (400, "invalid_customer", "events[0].customer", {"customer": "a\u0000b", "value": 1}),
    (400, "invalid_meter", "events[0].event_name", {"customer": "cus_8fq", "event_name": 5, "value": 1}),
    (400, "invalid_meter", "events[0].meter", {"customer": "cus_8fq", "meter": "m" * 101, "value": 1}),
    (400, "conflicting_fields", "events[0].event_name", {"customer": "cus_8fq", "meter": "a", "event_name": "b", "value": 1}),
    (400, "conflicting_fields", "events[0].units", {"customer": "cus_8fq", "value": 1, "units": 2}),
    (400, "invalid_value", "events[0].value", {"customer": "cus_8fq", "value": None}),
    (400, "invalid_value", "events[0].value", {"customer": "cus_8fq", "value": True}),
    (400, "invalid_value", "events[0].units", {"customer": "cus_8fq", "units": "12 units"}),
    (400, "invalid_value", "events[0].value", {"customer": "cus_8fq", "value": "NaN"}),
    (400, "invalid_value", "events[0].value", {"customer": "cus_8fq", "value": "Infinity"}),
    (400, "invalid_value", "events[0].value", {"customer": "cus_8fq", "value": {"n": 1}}),
    (400, "invalid_value", "events[0].value", {"customer": "cus_8fq", "value": "5\n"}),
    (422, "value_out_of_range", "events[0].value", {"customer": "cus_8fq", "value": 10**20}),
    (422, "value_out_of_range", "events[0].value", {"customer": "cus_8fq", "value": 1e20}),
    (422, "value_out_of_range", "events[0].value", {"customer": "cus_8fq", "value": "0.0000000000001"}),
    (422, "value_out_of_range", "events[0].units", {"customer": "cus_8fq", "units": "+9288.09288E16102500579400000217"}),
    (422, "value_out_of_range", "events[0].value", {"customer": "cus_8fq", "value": "1E-99999999999999999999"}),
    (400, "invalid_timestamp", "events[0].timestamp", {"customer": "cus_8fq", "value": 1, "timestamp": "yesterday"}),
    (400, "invalid_timestamp", "events[0].timestamp", {"customer": "cus_8fq", "value": 1, "timestamp": 1721043000}),
    (422, "date_out_of_range", "events[0].timestamp", {"customer": "cus_8fq", "value": 1, "timestamp": "1999-12-31T23:59:59Z"}),
    (422, "date_out_of_range", "events[0].timestamp", {"customer": "cus_8fq", "value": 1, "timestamp": "0001-01-01T00:00:00+01:00"}),
    (422, "timestamp_in_future", "events[0].timestamp", {"customer": "cus_8fq", "value": 1, "timestamp": "2026-01-15T12:05:01Z"}),
    (400, "invalid_properties", "events[0].properties", {"customer": "cus_8fq", "value": 1, "properties": [1]}),
    (422, "properties_too_large", "events[0].properties",
     {"customer": "cus_8fq", "value": 1, "properties": {"a": {"b": {"c": {"d": {"e": [1]}}}}}}),
    (422, "properties_too_large", "events[0].properties", {"customer": "cus_8fq", "value": 1, "properties": {"big": "x" * 8200}}),
    (400, "invalid_properties", "events[0].properties", {"customer": "cus_8fq", "value": 1, "properties": {"nul\u0000": 1}}),
    (400, "invalid_idempotency_key", "events[0].idempotency_key", {"customer": "cus_8fq", "value": 1, "idempotency_key": 7}),
    (400, "invalid_idempotency_key", "events[0].idempotency_key", {"customer": "cus_8fq", "value": 1, "idempotency_key": "k" * 256}),
    (422, "value_not_integer", "events[0].value", {"customer": "cus_8fq", "meter": "whole", "value": "1.5"}),
    (422, "negative_value", "events[0].value", {"customer": "cus_8fq", "meter": "api_calls", "value": -1}),
    # A meter's rules apply even before the customer is known.
    (422, "negative_value", "events[0].value", {"customer": "nobody", "meter": "api_calls", "value": -1}),
    (422, "missing_meter", "events[0].meter", {"customer": "nobody", "value": 1}),
    # The meter sums values: it needs one (a meter that counts events does not).
    (422, "missing_value", "events[0].value", {"customer": "cus_8fq"}),
    (422, "missing_value", "events[0].value", {"customer": "nobody", "meter": "nope"}),
]  # fmt: skip


@pytest.mark.parametrize(("status", "code", "param", "event"), REJECTIONS)
def test_a_rejected_event_is_refused_and_nothing_is_stored(
    project, subscription, ingest, status, code, param, event
):
    MeterFactory(project=project, code="whole", whole_numbers_only=True)

    response = ingest(event)

    assert response.status_code == status
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request"
    assert body["results"] == [
        {"index": 0, "status": "rejected", "code": code, "message": body["error"]["message"], "param": param}
    ]
    assert (body["accepted"], body["rejected"]) == (0, 1)
    assert stored(project) == []
    assert _recorded(project) == []


@pytest.mark.parametrize(
    "body", [["not an object"], {"events": [{"value": 1}, {"customer": "x", "value": "abc"}]}]
)
def test_a_list_with_no_event_stored_is_422(project, subscription, ingest, body):
    response = ingest(body)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == response.json()["results"][0]["code"]
    assert stored(project) == []


def test_a_meter_may_allow_negative_values_and_whole_values_written_as_decimals(
    project, subscription, ingest
):
    MeterFactory(project=project, code="corrections", allow_negative=True)
    MeterFactory(project=project, code="whole", whole_numbers_only=True)

    response = ingest(
        [
            {"customer": "cus_8fq", "meter": "corrections", "value": -3},
            {"customer": "cus_8fq", "meter": "whole", "value": "2.000"},
        ]
    )

    assert [result["status"] for result in response.json()["results"]] == ["unmatched", "unmatched"]
    assert [event.value for event in stored(project)] == [Decimal(-3), Decimal(2)]


def test_a_partial_batch_stores_the_valid_events_in_request_order(project, subscription, ingest):
    response = ingest(
        [
            {"customer": "cus_8fq", "value": 1},
            {"customer": "cus_8fq", "value": "abc"},
            {"customer": "someone-new", "meter": "api_calls", "value": 3},
            {"customer": "cus_8fq", "value": 4, "idempotency_key": "k"},
            {"customer": "cus_8fq", "value": 5, "idempotency_key": "k"},
        ]
    )

    assert response.status_code == 200
    body = response.json()
    events = stored(project)
    assert [result["status"] for result in body["results"]] == [
        "accepted", "rejected", "unmatched", "accepted", "duplicate",
    ]  # fmt: skip
    assert [result["index"] for result in body["results"]] == [0, 1, 2, 3, 4]
    assert body["results"][1] == {
        "index": 1,
        "status": "rejected",
        "code": "invalid_value",
        "message": "value must be a number or a decimal string.",
        "param": "events[1].value",
    }
    assert body["results"][2]["code"] == "unknown_customer"
    assert body["results"][4]["id"] == body["results"][3]["id"]
    assert (body["accepted"], body["duplicates"], body["unmatched"], body["rejected"]) == (2, 1, 1, 1)
    assert [event.value for event in events] == [Decimal(1), Decimal(3), Decimal(4)]


# --- unreadable bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"customer": "\xff\xfe", "value": 1}', 400, "invalid_json"),  # invalid UTF-8
        (b'{"customer": "a", "value": NaN}', 400, "invalid_json"),
        (b'{"customer": "a", "value": Infinity}', 400, "invalid_json"),
        (b'{"customer": "a", "value": 1e400}', 400, "invalid_json"),
        (b"[" * 100_000, 400, "invalid_json"),
        (b'"an event"', 400, "invalid_body"),
        (b"42", 400, "invalid_body"),
        (b'{"events": {"customer": "a"}}', 400, "invalid_body"),
        (b"[]", 400, "no_events"),
        (b'{"events": []}', 400, "no_events"),
        (json.dumps([{"customer": "a", "value": 1}] * 1001).encode(), 413, "too_many_events"),
    ],
)
def test_unreadable_bodies(project, subscription, ingest, body, status, code):
    response = ingest.client.post("/v1/usage", body, content_type="application/json")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert stored(project) == []


def test_a_body_over_the_size_limit_is_413(project, subscription, ingest, settings):
    settings.API_MAX_BODY_BYTES = 1000

    response = ingest([{"customer": "cus_8fq", "value": 1, "properties": {"pad": "x" * 1000}}])

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert stored(project) == []


def test_a_body_that_is_not_json_is_415(project, subscription, ingest):
    response = ingest.client.post("/v1/usage", "customer=cus_8fq&value=1", content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


# --- deduplication ---------------------------------------------------------------------------------


def test_a_key_is_a_duplicate_whatever_its_value_or_timestamp(project, subscription, ingest):
    first = ingest(
        {"customer": "cus_8fq", "value": 1, "idempotency_key": "k1", "timestamp": "2026-01-10T00:00:00Z"}
    )

    second = ingest(
        {"customer": "cus_8fq", "value": 999, "idempotency_key": "k1", "timestamp": "2026-01-11T00:00:00Z"}
    )

    assert second.json()["results"] == [
        {"index": 0, "status": "duplicate", "id": first.json()["results"][0]["id"]}
    ]
    assert second.json()["duplicates"] == 1
    [event] = stored(project)
    assert (event.value, event.timestamp) == (Decimal(1), datetime(2026, 1, 10, tzinfo=UTC))
    assert len(_recorded(project)) == 1  # only the request that stored something


def test_the_first_event_with_a_key_wins_within_a_batch(project, subscription, ingest):
    response = ingest(
        [
            {
                "customer": "cus_8fq",
                "value": "bad",
                "idempotency_key": "k",
            },  # rejected: does not claim the key
            {"customer": "cus_8fq", "value": 2, "idempotency_key": "k"},
            {"customer": "cus_8fq", "value": 3, "idempotency_key": "k"},
        ]
    )

    statuses = [result["status"] for result in response.json()["results"]]
    assert statuses == ["rejected", "accepted", "duplicate"]
    assert [event.value for event in stored(project)] == [Decimal(2)]


def test_keys_are_per_project(project, other_project, subscription, ingest):
    ingest({"customer": "cus_8fq", "value": 1, "idempotency_key": "shared"})
    theirs = api_client(other_project, [Scope.USAGE_WRITE])

    response = theirs.post(
        "/v1/usage", {"customer": "x", "meter": "m", "value": 1, "idempotency_key": "shared"}, format="json"
    )

    assert response.json()["results"][0]["status"] == "unmatched"
    assert UsageEvent.objects.count() == 2


def test_events_without_a_key_are_never_duplicates(project, subscription, ingest):
    ingest([{"customer": "cus_8fq", "value": 1}, {"customer": "cus_8fq", "value": 1}])

    assert len(stored(project)) == 2


def test_a_project_can_require_keys(project, subscription, ingest):
    Project.objects.filter(pk=project.pk).update(require_usage_idempotency_key=True)

    response = ingest(
        [{"customer": "cus_8fq", "value": 1}, {"customer": "cus_8fq", "value": 2, "idempotency_key": "a"}]
    )

    results = response.json()["results"]
    assert results[0]["code"] == "idempotency_key_required"
    assert results[0]["param"] == "events[0].idempotency_key"
    assert results[1]["status"] == "accepted"
    assert [event.value for event in stored(project)] == [Decimal(2)]


def test_the_idempotency_key_header_replays_the_whole_answer(project, subscription, ingest):
    first = ingest({"customer": "cus_8fq", "value": 1}, HTTP_IDEMPOTENCY_KEY="req-1")
    second = ingest({"customer": "cus_8fq", "value": 1}, HTTP_IDEMPOTENCY_KEY="req-1")

    assert second.content == first.content
    assert second["Idempotent-Replayed"] == "true"
    assert len(stored(project)) == 1


# --- matching --------------------------------------------------------------------------------------


def test_unmatched_events_are_stored_with_their_reason(project, subscription, meter, ingest):
    MeterFactory(project=project, code="storage_gb")
    CustomerFactory(project=project, external_id="no-subscription")

    response = ingest(
        [
            {"customer": "stranger", "meter": "api_calls", "value": 1},
            {"customer": "cus_8fq", "meter": "unknown_meter", "value": 1},
            {"customer": "no-subscription", "meter": "api_calls", "value": 1},
            {"customer": "cus_8fq", "meter": "storage_gb", "value": 1},  # not priced by the plan
            {"customer": "cus_8fq", "meter": "api_calls", "value": 1, "timestamp": "2025-12-31T23:59:59Z"},
        ]
    )

    codes = [result.get("code") for result in response.json()["results"]]
    assert codes == [
        UnmatchedReason.UNKNOWN_CUSTOMER,
        UnmatchedReason.UNKNOWN_METER,
        UnmatchedReason.NO_ACTIVE_SUBSCRIPTION,
        UnmatchedReason.NO_ACTIVE_SUBSCRIPTION,
        UnmatchedReason.NO_ACTIVE_SUBSCRIPTION,  # before the subscription started
    ]
    assert response.json()["unmatched"] == 5
    events = stored(project)
    assert [event.unmatched_reason for event in events] == codes
    assert [(e.customer_id is not None, e.meter_id is not None, e.subscription_id) for e in events] == [
        (False, True, None), (True, False, None), (True, True, None), (True, True, None), (True, True, None),
    ]  # fmt: skip
    assert all(event.matched_at is None for event in events)


def test_usage_while_paused_is_unmatched(project, subscription, ingest):
    from subscriptions.services import subscription_pause

    subscription_pause(subscription=subscription, actor=None)

    response = ingest({"customer": "cus_8fq", "value": 1})

    assert response.json()["results"][0]["code"] == "no_active_subscription"


def test_the_earliest_subscription_pricing_the_meter_wins(project, customer, meter, plan, ingest):
    first = subscribe(customer, plan, starts_at=JANUARY)
    subscribe(
        customer, make_plan(project, charges=[{"meter": meter, "unit_price": "0.02"}]), starts_at=JANUARY
    )

    ingest({"customer": "cus_8fq", "meter": "api_calls", "value": 1})

    assert stored(project)[0].subscription == first


def test_the_meter_is_inferred_at_the_events_time(project, customer, meter, ingest):
    other = MeterFactory(project=project, code="storage_gb")
    subscribe(customer, make_plan(project, charges=[{"meter": meter, "unit_price": "1"}]), starts_at=JANUARY,
              ends_at=datetime(2026, 1, 10, tzinfo=UTC))  # fmt: skip
    subscribe(customer, make_plan(project, charges=[{"meter": other, "unit_price": "1"}]),
              starts_at=datetime(2026, 1, 10, tzinfo=UTC))  # fmt: skip

    response = ingest(
        [
            {"customer": "cus_8fq", "value": 1, "timestamp": "2026-01-05T00:00:00Z"},
            {"customer": "cus_8fq", "value": 1},
        ]
    )

    assert response.json()["accepted"] == 2
    assert [event.meter_code for event in stored(project)] == ["api_calls", "storage_gb"]


def test_an_ambiguous_or_missing_meter_is_rejected(project, customer, meter, ingest):
    other = MeterFactory(project=project, code="storage_gb")
    CustomerFactory(project=project, external_id="no-plan")
    both = make_plan(
        project, charges=[{"meter": meter, "unit_price": "1"}, {"meter": other, "unit_price": "1"}]
    )
    subscribe(customer, both, starts_at=JANUARY)

    response = ingest([{"customer": "cus_8fq", "value": 1}, {"customer": "no-plan", "value": 1}])

    assert response.status_code == 422
    assert [result["code"] for result in response.json()["results"]] == ["ambiguous_meter", "missing_meter"]
    assert response.json()["results"][0]["param"] == "events[0].meter"


# --- the usage.recorded event, scopes and limits ---------------------------------------------------


def test_one_usage_recorded_event_per_request_lists_what_was_stored(project, subscription, ingest):
    response = ingest(
        [
            {"customer": "cus_8fq", "value": 2, "timestamp": "2026-01-10T10:00:00.5Z"},
            {"customer": "stranger", "meter": "api_calls", "value": "0.25"},
            {"customer": "cus_8fq", "value": "x"},
            {"customer": "cus_8fq", "value": "1.5"},
        ]
    )

    [event] = _recorded(project)
    ids = [result.get("id") for result in response.json()["results"]]
    assert event.data == {
        "accepted": 2,
        "unmatched": 1,
        "events": [ids[0], ids[3]],
        "unmatched_events": [ids[1]],
        "usage": [{"customer": "cus_8fq", "meter": "api_calls", "events": 2, "value": "3.5"}],
    }


def test_reporting_usage_needs_the_usage_write_scope(project, subscription):
    reader = api_client(project, [Scope.BILLING_READ])

    response = reader.post("/v1/usage", {"customer": "cus_8fq", "value": 1}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"
    assert UsageEvent.objects.count() == 0


def test_ingestion_counts_against_the_ingest_rate_limit(project, subscription, ingest):
    Project.objects.filter(pk=project.pk).update(
        ingest_rate_limit_per_minute=2, api_rate_limit_per_minute=1000
    )

    statuses = [ingest({"customer": "cus_8fq", "value": 1}).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_a_customer_or_meter_with_usage_cannot_be_deleted(project, subscription, meter, ingest):
    from billing_site.errors import Conflict
    from catalog.services import customer_delete
    from meters.services import meter_delete

    ingest({"customer": "cus_8fq", "value": 1})

    # The events table has no database foreign keys (speed); Django's PROTECT still holds.
    with pytest.raises(Conflict):
        customer_delete(customer=subscription.customer, actor=None)
    with pytest.raises(Conflict):
        meter_delete(meter=meter, actor=None)
    assert UsageEvent.objects.count() == 1
