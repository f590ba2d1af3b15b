"""The outbox write (events_record): one INSERT for a batch of events, and no query for endpoints
when the project has no enabled one."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction

from catalog.models import Customer
from tests.catalog.factories import CustomerFactory
from tests.webhooks.factories import make_endpoint
from webhooks.models import Delivery, Event
from webhooks.payloads import payload_for
from webhooks.services import event_record, events_record

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@time_machine.travel(NOW, tick=False)
def test_a_batch_is_one_insert_with_the_events_in_order(project, django_assert_num_queries):
    customer = CustomerFactory(project=project, external_id="cus_1")
    payload = payload_for(customer)
    with transaction.atomic(), django_assert_num_queries(1):
        events = events_record(
            project=project,
            events=[
                ("customer.updated", customer, payload),
                ("invoice.paid", None, {"amount": Decimal("12.50"), "at": NOW}),
            ],
        )

    stored = list(Event.objects.filter(project=project).order_by("id"))
    assert [event.pk for event in events] == [event.pk for event in stored]
    assert [(e.type, e.object_type, e.object_id, e.created_at) for e in stored] == [
        ("customer.updated", "customer", customer.public_id, NOW),
        ("invoice.paid", "", "", NOW),
    ]
    assert stored[0].data == payload_for(Customer.objects.get(pk=customer.pk)) == payload
    assert stored[1].data == {"amount": "12.50", "at": "2026-03-02T12:00:00Z"}
    assert [event.public_id for event in events] == [event.public_id for event in stored]
    assert not Delivery.objects.exists()


def test_events_go_to_the_enabled_endpoints_whose_filter_takes_them(project, other_project):
    invoices = make_endpoint(project, event_types=["invoice.*"])
    every = make_endpoint(project)
    make_endpoint(project, enabled=False)
    make_endpoint(other_project)

    with transaction.atomic():
        paid, created = events_record(
            project=project,
            events=[("invoice.paid", None, {"id": "in_1"}), ("customer.created", None, {"id": "cus_1"})],
        )

    deliveries = Delivery.objects.order_by("event_id", "endpoint_id")
    assert [(d.event_id, d.endpoint_id) for d in deliveries] == [
        (paid.pk, invoices.pk),
        (paid.pk, every.pk),
        (created.pk, every.pk),
    ]
    assert all(d.project_id == project.pk for d in deliveries)


def test_a_project_without_enabled_endpoints_pays_one_statement(project, django_assert_num_queries):
    make_endpoint(project, enabled=False)
    with transaction.atomic(), django_assert_num_queries(1):
        event = event_record(project=project, type="customer.created", data={"id": "cus_1"})

    assert Event.objects.get().pk == event.pk
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_outside_a_transaction_writes_nothing(project):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        events_record(project=project, events=[("customer.created", None, {"id": "cus_1"})])

    assert not Event.objects.exists()


def test_an_event_without_obj_or_data_writes_nothing(project):
    with pytest.raises(ValueError, match="needs obj or data"), transaction.atomic():
        events_record(project=project, events=[("a.b", None, {"id": 1}), ("customer.created", None, None)])

    assert not Event.objects.exists()


def test_an_empty_batch_writes_nothing(project, django_assert_num_queries):
    with transaction.atomic(), django_assert_num_queries(0):
        assert events_record(project=project, events=[]) == []
