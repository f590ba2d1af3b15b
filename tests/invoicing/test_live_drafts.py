"""Drafts are live: a draft read right after usage was accepted shows it, through the API and the
admin, and the background refresh the ingestion queues does the same without a read."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse
from django_q.conf import Conf

from accounts.models import Role
from invoicing.billing import billing_close, draft_refresh
from invoicing.models import Invoice, InvoiceStatus
from subscriptions.models import Subscription
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe

pytestmark = pytest.mark.django_db

FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
NOW = datetime(2026, 2, 10, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def draft(project):
    meter = MeterFactory(project=project, code="api_calls", name="API calls")
    plan = make_plan(project, base_fee="0", charges=[{"meter": meter, "unit_price": "0.01"}])
    subscription = subscribe(CustomerFactory(project=project, external_id="acme"), plan, starts_at=FEB_1)
    billing_close(as_of=NOW)
    return draft_refresh(subscription=subscription)


def _report(api, value, django_capture_on_commit_callbacks):
    body = {"customer": "acme", "meter": "api_calls", "value": value, "timestamp": "2026-02-10T11:00:00Z"}
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/v1/usage", body, format="json").status_code == 200


def test_a_draft_read_right_after_ingesting_shows_the_usage(api, draft, django_capture_on_commit_callbacks):
    _report(api, 1500, django_capture_on_commit_callbacks)
    assert Subscription.objects.get(pk=draft.subscription_id).draft_stale

    one = api.get(f"/v1/invoices/{draft.public_id}").json()
    _report(api, 500, django_capture_on_commit_callbacks)
    listed = api.get("/v1/invoices?status=draft").json()["results"]

    assert one["total"]["amount"] == 1500  # 15.00 in cents
    assert [invoice["total"]["amount"] for invoice in listed] == [2000]
    assert not Subscription.objects.get(pk=draft.subscription_id).draft_stale


def test_the_queued_refresh_updates_the_draft_without_a_read(
    api, draft, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(Conf, "SYNC", True)  # the refresh task runs as it is queued

    _report(api, 1500, django_capture_on_commit_callbacks)

    draft.refresh_from_db()
    assert draft.total == Decimal("15.00")
    assert not Subscription.objects.get(pk=draft.subscription_id).draft_stale


def test_the_admin_shows_a_stale_draft_recomputed(
    client, project, draft, api, django_capture_on_commit_callbacks
):
    membership = MembershipFactory(project=project, role=Role.VIEWER)
    client.force_login(membership.user)
    _report(api, 700, django_capture_on_commit_callbacks)

    page = client.get(reverse("admin:invoicing_invoice_change", args=[draft.pk]))

    assert page.status_code == 200
    assert Invoice.objects.get(pk=draft.pk).total == Decimal("7.00")
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT
