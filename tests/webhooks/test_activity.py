from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction

from webhooks.models import Event
from webhooks.services import event_record

pytestmark = pytest.mark.django_db


def _record(project, type_, object_id="", data=None):
    with transaction.atomic():
        event = event_record(project=project, type=type_, data=data or {})
        if object_id:
            Event.objects.filter(pk=event.pk).update(object_type="customer", object_id=object_id)
    return event


@pytest.mark.django_db(transaction=True)
def test_event_record_refuses_to_run_outside_a_transaction(project):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        event_record(project=project, type="customer.created", data={})

    assert not Event.objects.exists()


def test_event_record_keeps_the_object_and_plain_json(project):
    with transaction.atomic():
        event = event_record(
            project=project, type="project.updated", data={"amount": Decimal("1.50")}, obj=project
        )

    event.refresh_from_db()
    assert (event.object_type, event.object_id) == ("project", project.public_id)
    assert event.data == {"amount": "1.50"}
    assert event.public_id.startswith("msg_")


def test_activity_lists_newest_first_with_the_object(project, api):
    _record(project, "customer.created", "cus_1", {"id": "cus_1"})
    _record(project, "invoice.paid", "in_1")

    body = api.get("/v1/activity").json()

    # The oldest is the creation of the client's own key.
    assert [e["type"] for e in body["results"]] == ["invoice.paid", "customer.created", "api_key.created"]
    assert body["results"][1]["object"] == {"type": "customer", "id": "cus_1"}
    assert body["results"][1]["data"] == {"id": "cus_1"}


def test_activity_filters_by_type_family_object_and_time(project, api):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        _record(project, "invoice.created", "in_1")
    with time_machine.travel(datetime(2026, 2, 1, tzinfo=UTC), tick=False):
        _record(project, "invoice.paid", "in_1")
        _record(project, "customer.created", "cus_1")
        _record(project, "usage.recorded")

    def types(query):
        return [e["type"] for e in api.get(f"/v1/activity?{query}").json()["results"]]

    assert types("type=invoice.*") == ["invoice.paid", "invoice.created"]
    assert types("type=customer.created,usage.recorded") == ["usage.recorded", "customer.created"]
    assert types("object=in_1") == ["invoice.paid", "invoice.created"]
    assert types("created_before=2026-01-15T00:00:00Z") == ["invoice.created"]
    assert types("created_after=2026-02-01T00:00:00Z&type=invoice.*") == ["invoice.paid"]


def test_activity_pages_with_a_cursor(project, api):
    for n in range(5):
        _record(project, f"test.{n}")

    first = api.get("/v1/activity?limit=2").json()
    second = api.get(first["next"]).json()

    assert [e["type"] for e in first["results"]] == ["test.4", "test.3"]
    assert [e["type"] for e in second["results"]] == ["test.2", "test.1"]


def test_activity_never_shows_another_projects_events(project, other_project, api):
    _record(other_project, "customer.created")

    results = api.get("/v1/activity").json()["results"]

    assert [(e["type"], e["object"]["id"]) for e in results] == [
        ("api_key.created", project.api_keys.get().public_id)
    ]
