"""The subscription's admin pages: periods and fees as the project writes them, metadata as
`key = value` lines."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.urls import reverse

from accounts.models import AuditLogEntry, Role
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CustomerFactory, make_plan, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscription(project):
    with time_machine.travel(datetime(2026, 1, 15, 12, 0, tzinfo=UTC), tick=False):
        return subscribe(
            CustomerFactory(project=project),
            make_plan(project, base_fee="49"),
            starts_at=datetime(2026, 1, 1, tzinfo=UTC),
            metadata={"crm_id": "A-1"},
        )


def _login(client, project, role):
    client.force_login(MembershipFactory(project=project, role=role).user)


def test_the_list_shows_the_current_period_compactly(client, project, subscription):
    _login(client, project, Role.VIEWER)

    listed = client.get(reverse("admin:subscriptions_subscription_changelist")).content.decode()

    assert '<td class="field-current_period">Jan 1\u2009–\u200931, 2026</td>' in listed


def test_a_viewer_reads_metadata_and_the_phases_base_fee(client, project, subscription):
    _login(client, project, Role.VIEWER)

    page = client.get(
        reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
    ).content.decode()

    assert '<div class="readonly"><div>crm_id = A-1</div></div>' in page
    assert "<p>$49.00</p>" in page.split('class="field-base_fee"')[1]
    assert "{&#x27;crm_id&#x27;" not in page
    assert '{"crm_id"' not in page


def test_metadata_is_edited_as_lines_and_a_bad_line_changes_nothing(client, project, subscription):
    _login(client, project, Role.BILLING_ADMIN)
    url = reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
    form = {
        "ends_at_0": "", "ends_at_1": "", "external_reference": "", "payment_terms_days": "",
        "phases-TOTAL_FORMS": "1", "phases-INITIAL_FORMS": "1",
    }  # fmt: skip

    refused = client.post(url, {**form, "metadata": "crm_id: A-2"})
    saved = client.post(url, {**form, "metadata": "crm_id = A-2\nregion = eu"})

    assert refused.context["adminform"].form.errors["metadata"] == ["Line 1: write 'key = value'."]
    assert saved.status_code == 302
    subscription.refresh_from_db()
    assert subscription.metadata == {"crm_id": "A-2", "region": "eu"}
    assert AuditLogEntry.objects.filter(action="subscription.updated").count() == 1
