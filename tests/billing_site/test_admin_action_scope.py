"""A bulk action that writes acts only where the user may write: a billing admin of one project who
only reads another selects rows of both, and the other project's rows are left as they were."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from accounts.models import AuditLogEntry, Role
from catalog.models import Product
from subscriptions.models import Status, Subscription
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CustomerFactory, ProductFactory, make_plan, subscribe

LEFT_OUT = "1 selected row(s) of projects where you only read were left unchanged."


@pytest.fixture
def staff(client, project, other_project):
    user = MembershipFactory(project=project, role=Role.BILLING_ADMIN).user
    MembershipFactory(project=other_project, user=user, role=Role.VIEWER)
    client.force_login(user)
    return client


def _act(client, changelist: str, action: str, *objects) -> list[str]:
    data = {"action": action, "_selected_action": [obj.pk for obj in objects], "index": 0}
    if action == "delete_selected":
        data["post"] = "yes"  # confirmed
    response = client.post(reverse(f"admin:{changelist}_changelist"), data, follow=True)
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


@pytest.mark.parametrize("action", ["archive", "delete_selected"])
def test_products_of_a_project_the_user_only_reads_are_left_unchanged(staff, project, other_project, action):
    mine, theirs = ProductFactory(project=project), ProductFactory(project=other_project)
    audited = AuditLogEntry.objects.filter(project=other_project).count()

    messages = _act(staff, "catalog_product", action, mine, theirs)

    assert LEFT_OUT in messages
    theirs.refresh_from_db()
    assert theirs.archived_at is None
    assert Product.objects.filter(pk=theirs.pk).exists()
    assert AuditLogEntry.objects.filter(project=other_project).count() == audited
    if action == "archive":
        mine.refresh_from_db()
        assert mine.archived_at is not None
    else:
        assert not Product.objects.filter(pk=mine.pk).exists()


def test_a_subscription_of_a_project_the_user_only_reads_is_not_cancelled(staff, project, other_project):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    mine = subscribe(CustomerFactory(project=project), make_plan(project, base_fee="10"), starts_at=start)
    theirs = subscribe(
        CustomerFactory(project=other_project), make_plan(other_project, base_fee="10"), starts_at=start
    )

    messages = _act(staff, "subscriptions_subscription", "cancel_now", mine, theirs)

    assert LEFT_OUT in messages
    assert Subscription.objects.get(pk=theirs.pk).status == Status.ACTIVE
    assert Subscription.objects.get(pk=mine.pk).status == Status.CANCELED


def test_a_customer_stays_in_its_project(client, project, other_project):
    user = MembershipFactory(project=project, role=Role.BILLING_ADMIN).user
    MembershipFactory(project=other_project, user=user, role=Role.BILLING_ADMIN)
    client.force_login(user)
    customer = CustomerFactory(project=project, name="Initech")
    url = reverse("admin:catalog_customer_change", args=[customer.pk])

    page = client.get(url).content.decode()
    client.post(url, {"project": other_project.pk, "external_id": customer.external_id, "name": "Initech",
                      "currency": "USD", "timezone": "UTC", "tax_status": "taxable"})  # fmt: skip

    assert 'name="project"' not in page
    customer.refresh_from_db()
    assert customer.project == project
