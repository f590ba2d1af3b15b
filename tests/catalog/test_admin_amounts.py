"""Amounts on the catalog's list and read-only pages: in their currency, as the project writes money."""

import pytest
from django.urls import reverse

from accounts.models import Role
from catalog.models import CouponKind
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import (
    CouponFactory,
    CustomerFactory,
    MeterFactory,
    TaxRateFactory,
    make_plan,
    subscribe,
)

pytestmark = pytest.mark.django_db


def _login(client, project, role=Role.OWNER):
    client.force_login(MembershipFactory(project=project, role=role).user)


def test_a_coupon_amount_is_written_as_the_project_writes_money(client, project):
    project.locale = "de_DE"
    project.save()
    coupon = CouponFactory(
        project=project, kind=CouponKind.FIXED_AMOUNT, amount_off={"EUR": "10", "USD": "12.5"}
    )
    _login(client, project)

    listed = client.get(reverse("admin:catalog_coupon_changelist")).content.decode()
    page = client.get(reverse("admin:catalog_coupon_change", args=[coupon.pk])).content.decode()

    assert '<td class="field-discount">10,00\xa0€, 12,50\xa0$</td>' in listed
    assert '<div class="readonly">10,00\xa0€, 12,50\xa0$</div>' in page
    assert '{"EUR"' not in page


def test_plans_show_their_fees_in_their_currency_not_as_stored(client, project):
    meter = MeterFactory(project=project)
    plan = make_plan(
        project, base_fee="49", minimum_commitment="100",
        charges=[{"meter": meter, "pricing_model": "per_unit", "unit_price": "0.002"}],
    )  # fmt: skip
    subscribe(CustomerFactory(project=project), plan)  # in use: read-only
    _login(client, project)

    listed = client.get(reverse("admin:catalog_plan_changelist")).content.decode()
    page = client.get(reverse("admin:catalog_plan_change", args=[plan.pk])).content.decode()

    assert (
        '<td class="field-base_fee_label">$49.00</td><td class="field-minimum_commitment_label">$100.00</td>'
        in (listed)
    )
    assert '<div class="readonly">$49.00</div>' in page
    assert '<div class="readonly">$0.002</div>' in page  # the charge's unit price
    assert "000000" not in page


def test_a_tax_rate_shows_its_percentage_without_trailing_zeros(client, project):
    rate = TaxRateFactory(project=project, percentage="19.5")
    _login(client, project)

    page = client.get(reverse("admin:catalog_taxrate_change", args=[rate.pk])).content.decode()

    assert '<div class="readonly">19.5 %</div>' in page
    assert "19.500000" not in page
