from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import AuditLogEntry, Role
from catalog.forms import TiersField
from catalog.models import Plan
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import (
    CustomerFactory,
    MeterFactory,
    ProductFactory,
    make_plan,
    subscribe,
    tier_rows,
)

pytestmark = pytest.mark.django_db


def _login(client, project, role):
    user = MembershipFactory(project=project, role=role).user
    client.force_login(user)
    return user


def _plan_form(project, product, meter, **changes):
    data = {
        "project": project.pk, "product": product.pk, "code": "pro", "name": "Pro", "currency": "USD",
        "interval": "month", "interval_count": "1", "trial_days": "0", "bill_usage_during_trial": "on",
        "base_fee": "49", "base_fee_timing": "in_advance", "minimum_commitment": "0",
        "entitlements": "{}",
        "charges-TOTAL_FORMS": "1", "charges-INITIAL_FORMS": "0",
        "charges-0-kind": "usage", "charges-0-meter": meter.pk, "charges-0-pricing_model": "graduated",
        **tier_rows("charges-0-tiers", ("1000", "0", "0"), ("", "0.002", "0")), "charges-0-unit_price": "0",
        "charges-0-package_rounding": "up", "charges-0-timing": "in_arrears",
        "charges-0-free_units": "0", "charges-0-minimum_amount": "0", "charges-0-position": "0",
    }  # fmt: skip
    data.update(changes)
    return data


def test_a_billing_admin_creates_a_plan_with_tiered_charges(client, project):
    user = _login(client, project, Role.BILLING_ADMIN)
    product, meter = ProductFactory(project=project), MeterFactory(project=project)

    response = client.post(reverse("admin:catalog_plan_add"), _plan_form(project, product, meter))

    assert response.status_code == 302
    plan = Plan.objects.get()
    assert plan.charges.get().tiers == [
        {"up_to": "1000", "unit_price": "0", "flat_fee": "0"},
        {"up_to": None, "unit_price": "0.002", "flat_fee": "0"},
    ]
    assert AuditLogEntry.objects.get(action="admin.plan.added").actor_label == user.username


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([("1000", "0", "0"), ("500", "1", "0"), ("", "1", "0")], b"Tier bounds must be strictly ascending"),
        ([("1000", "0", "0")], b"The last tier must be open-ended"),
        ([("1000", "", "0")], b"Tier 1: give its unit price."),
    ],
)
def test_tier_mistakes_are_shown_on_the_field_and_nothing_is_saved(client, project, tiers, message):
    _login(client, project, Role.BILLING_ADMIN)
    product, meter = ProductFactory(project=project), MeterFactory(project=project)
    form = _plan_form(project, product, meter)
    form = {name: value for name, value in form.items() if "-tiers-" not in name}

    response = client.post(
        reverse("admin:catalog_plan_add"), {**form, **tier_rows("charges-0-tiers", *tiers)}
    )

    assert response.status_code == 200
    assert message in response.content
    assert not Plan.objects.exists()


def test_a_meter_of_another_project_is_refused(client, project, other_project):
    _login(client, project, Role.OWNER)
    product = ProductFactory(project=project)
    foreign = MeterFactory(project=other_project)

    response = client.post(reverse("admin:catalog_plan_add"), _plan_form(project, product, foreign))

    assert response.status_code == 200
    assert not Plan.objects.exists()


def test_a_superuser_cannot_mix_projects_either(client, project, other_project, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    foreign_product = ProductFactory(project=other_project)
    meter = MeterFactory(project=project)

    response = client.post(reverse("admin:catalog_plan_add"), _plan_form(project, foreign_product, meter))

    assert b"This belongs to another project." in response.content
    assert not Plan.objects.exists()


def test_a_plan_in_use_is_read_only_and_versioned_by_action(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    plan = make_plan(project, base_fee="49")
    subscribe(CustomerFactory(project=project), plan)

    page = client.get(reverse("admin:catalog_plan_change", args=[plan.pk]))
    client.post(
        reverse("admin:catalog_plan_changelist"), {"action": "new_version", "_selected_action": [plan.pk]}
    )

    assert b'name="base_fee"' not in page.content  # shown, not editable
    successor = Plan.objects.get(previous_version=plan)
    assert (successor.version, successor.base_fee, successor.code) == (2, Decimal(49), plan.code)
    editable = client.get(reverse("admin:catalog_plan_change", args=[successor.pk]))
    assert b'name="base_fee"' in editable.content


def test_a_viewer_sees_plans_but_cannot_edit(client, project):
    _login(client, project, Role.VIEWER)
    plan = make_plan(project)

    assert client.get(reverse("admin:catalog_plan_change", args=[plan.pk])).status_code == 200
    assert client.get(reverse("admin:catalog_plan_add")).status_code == 403


def test_customer_admin_search_and_audit(client, project):
    user = _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project, name="Initech", external_id="acct-9")
    CustomerFactory(project=project, name="Globex")

    found = client.get(reverse("admin:catalog_customer_changelist") + "?q=acct-9")
    changed = client.post(
        reverse("admin:catalog_customer_change", args=[customer.pk]),
        {"project": project.pk, "external_id": "acct-9", "name": "Initech Inc", "email": customer.email,
         "currency": "USD", "timezone": "UTC", "metadata": "", "tax_status": "taxable"},
    )  # fmt: skip

    assert b"Initech" in found.content
    assert b"Globex" not in found.content
    assert changed.status_code == 302
    entry = AuditLogEntry.objects.get(action="customer.updated")
    assert (entry.actor_label, entry.changes) == (user.username, {"name": ["Initech", "Initech Inc"]})


def test_the_tiers_widget_reads_the_table_and_shows_stored_tiers_without_trailing_zeros():
    field = TiersField()
    posted = {
        **tier_rows("charges-2-tiers", ("1000", "0", ""), ("", "", ""), ("∞", "0.002", "5")),
        "charges-2-tiers-7-unit_price": "9",  # a row added by hand, after empty ones
        "charges-20-tiers-0-up_to": "5",  # another form's
    }

    typed = field.widget.value_from_datadict(posted, {}, "charges-2-tiers")
    html = field.widget.render(
        "charges-2-tiers", [{"up_to": "1000", "unit_price": "0.100000", "flat_fee": "0"}]
    )

    assert field.clean(typed) == [
        {"up_to": "1000", "unit_price": "0", "flat_fee": "0"},
        {"up_to": None, "unit_price": "0.002", "flat_fee": "5"},
        {"up_to": None, "unit_price": "9", "flat_fee": "0"},
    ]
    assert 'name="charges-2-tiers-0-unit_price" id="id_charges-2-tiers-0-unit_price" value="0.1"' in html
    assert 'name="charges-2-tiers-3-up_to"' in html  # the tier and three empty rows
    assert 'name="charges-2-tiers-4-up_to"' not in html
