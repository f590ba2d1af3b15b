"""What happens to usage naming a customer or meter that does not exist: kept as unmatched (the
default) or refused (`unmatched_usage: reject`); and the `usage.unmatched` event that tells the
company's systems either way."""

from decimal import Decimal

import pytest

from accounts.models import Project, UnmatchedUsage
from meters.services import MAX_UNMATCHED_LISTED
from tests.catalog.factories import CustomerFactory, MeterFactory
from tests.meters.conftest import stored
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def _unmatched_events(project) -> list[Event]:
    return list(Event.objects.filter(project=project, type="usage.unmatched"))


@pytest.fixture
def refusing(project):
    Project.objects.filter(pk=project.pk).update(unmatched_usage=UnmatchedUsage.REJECT)


def test_a_typo_is_kept_as_unmatched_by_default_and_reported(project, subscription, ingest):
    response = ingest({"customer": "cus_8fq", "meter": "api_cals", "value": 3})

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert (result["status"], result["code"]) == ("unmatched", "unknown_meter")
    [event] = stored(project)
    [unmatched] = _unmatched_events(project)
    assert unmatched.data == {
        "unmatched": 1,
        "rejected": 0,
        "events": [
            {"index": 0, "status": "unmatched", "code": "unknown_meter", "id": event.public_id,
             "customer": "cus_8fq", "meter": "api_cals", "subscription": None, "product": None},
        ],
        "more": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"customer": "cus_8fp", "meter": "api_calls", "value": 1}, "unknown_customer", "events[0].customer"),
        ({"customer": "cus_8fp", "value": 1}, "unknown_customer", "events[0].customer"),  # meter not inferable
        ({"customer_id": "cus_8fq", "meter": "api_cals", "value": 1}, "unknown_meter", "events[0].meter"),
        ({"stripeCustomerId": "cus_Nope", "value": 1}, "unknown_processor_customer", "events[0].stripeCustomerId"),
    ],
)  # fmt: skip
def test_a_project_that_refuses_answers_404_for_one_event(
    project, subscription, refusing, ingest, event, code, param
):
    response = ingest(event)

    assert response.status_code == 404
    body = response.json()
    assert body["error"] == {
        "type": "invalid_request",
        "code": code,
        "message": body["results"][0]["message"],
        "param": param,
    }
    assert (body["accepted"], body["unmatched"], body["rejected"]) == (0, 0, 1)
    assert stored(project) == []
    assert not Event.objects.filter(project=project, type="usage.recorded").exists()
    # The company's systems still hear of it.
    [unmatched] = _unmatched_events(project)
    assert (unmatched.data["unmatched"], unmatched.data["rejected"]) == (0, 1)
    assert unmatched.data["events"][0]["code"] == code


def test_in_a_batch_only_the_unknown_events_are_refused(project, subscription, refusing, ingest):
    CustomerFactory(project=project, external_id="no-subscription")

    response = ingest(
        [
            {"customer": "cus_8fq", "value": 1},
            {"customer": "stranger", "meter": "api_calls", "value": 2},
            {"customer": "cus_8fq", "meter": "api_cals", "value": 3},
            {"customer": "no-subscription", "meter": "api_calls", "value": 4},  # kept: both exist
            {"customer": "cus_8fq", "value": "x"},
        ]
    )

    assert response.status_code == 200
    body = response.json()
    assert [(r["status"], r.get("code")) for r in body["results"]] == [
        ("accepted", None),
        ("rejected", "unknown_customer"),
        ("rejected", "unknown_meter"),
        ("unmatched", "no_active_subscription"),
        ("rejected", "invalid_value"),
    ]
    assert [event.value for event in stored(project)] == [Decimal(1), Decimal(4)]
    [unmatched] = _unmatched_events(project)
    assert unmatched.data == {
        "unmatched": 1,
        "rejected": 2,
        "events": [
            {"index": 1, "status": "rejected", "code": "unknown_customer", "id": None,
             "customer": "stranger", "meter": "api_calls", "subscription": None, "product": None},
            {"index": 2, "status": "rejected", "code": "unknown_meter", "id": None,
             "customer": "cus_8fq", "meter": "api_cals", "subscription": None, "product": None},
            {"index": 3, "status": "unmatched", "code": "no_active_subscription", "id": body["results"][3]["id"],
             "customer": "no-subscription", "meter": "api_calls", "subscription": None, "product": None},
        ],
        "more": 0,
    }  # fmt: skip


def test_references_to_nothing_are_reported_whatever_the_policy(project, subscription, ingest):
    ingest(
        [
            {"subscription": "sub_typo", "value": 1},
            {"customer": "cus_8fq", "productId": "prod-typo", "value": 1},
            {"customer": "cus_8fq", "value": 1, "timestamp": "2099-01-01T00:00:00Z"},  # not a reference
        ]
    )

    [unmatched] = _unmatched_events(project)
    assert [(e["index"], e["code"], e["subscription"], e["product"]) for e in unmatched.data["events"]] == [
        (0, "unknown_subscription", "sub_typo", None),
        (1, "unknown_product", None, "prod-typo"),
    ]


def test_one_usage_unmatched_per_request_listing_at_most_a_hundred(project, subscription, ingest):
    events = [{"customer": f"new-{n}", "meter": "api_calls", "value": 1} for n in range(150)]

    response = ingest([{"customer": "cus_8fq", "value": 1}, *events])

    assert response.json()["unmatched"] == 150
    [unmatched] = _unmatched_events(project)
    assert (unmatched.data["unmatched"], unmatched.data["more"]) == (150, 50)
    assert [e["customer"] for e in unmatched.data["events"]] == [
        f"new-{n}" for n in range(MAX_UNMATCHED_LISTED)
    ]


def test_no_usage_unmatched_when_everything_matched_or_repeated(project, subscription, ingest):
    ingest({"customer": "stranger", "meter": "api_calls", "value": 1, "idempotency_key": "k"})
    assert len(_unmatched_events(project)) == 1

    ingest(
        [
            {"customer": "cus_8fq", "value": 1},
            {"customer": "x", "meter": "m", "value": 1, "idempotency_key": "k"},
        ]
    )

    assert len(_unmatched_events(project)) == 1  # the repeat of the unmatched event is a duplicate


def test_refusing_applies_to_unknown_references_only(project, subscription, refusing, ingest):
    MeterFactory(project=project, code="storage_gb")  # exists, not priced by the plan

    response = ingest({"customer": "cus_8fq", "meter": "storage_gb", "value": 1})

    assert response.json()["results"][0]["code"] == "no_active_subscription"
    assert len(stored(project)) == 1
