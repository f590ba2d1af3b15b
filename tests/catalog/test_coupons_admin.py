from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Role
from catalog.models import Coupon, CouponKind, TaxRate
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CouponFactory, CustomerFactory, TaxRateFactory
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def _login(client, project, role):
    client.force_login(MembershipFactory(project=project, role=role).user)


def test_lists_show_rates_and_discounts_readably(client, project):
    _login(client, project, Role.VIEWER)
    TaxRateFactory(project=project, name="VAT", percentage=Decimal("20.500000"))
    coupon = CouponFactory(project=project, name="Launch", max_redemptions=10)
    CouponFactory(project=project, name="Welcome", kind=CouponKind.FIXED_AMOUNT, amount_off={"USD": "10.00"})
    CustomerFactory(project=project).coupon_redemptions.create(project=project, coupon=coupon)

    rates = client.get(reverse("admin:catalog_taxrate_changelist")).content.decode()
    coupons = client.get(reverse("admin:catalog_coupon_changelist")).content.decode()

    assert "20.5 %" in rates
    assert "20 %" in coupons
    assert "$10.00" in coupons
    assert "1 / 10" in coupons


def test_a_billing_admin_creates_a_rate_and_a_coupon_through_the_services(client, project):
    _login(client, project, Role.BILLING_ADMIN)

    rate = client.post(
        reverse("admin:catalog_taxrate_add"),
        {"project": project.pk, "name": "VAT", "percentage": "19", "jurisdiction": "DE"},
    )
    coupon = client.post(
        reverse("admin:catalog_coupon_add"),
        {"project": project.pk, "code": "welcome", "name": "Welcome", "kind": "fixed_amount",
         "amount_off": '{"USD": "10"}', "duration": "once",
         "redemptions-TOTAL_FORMS": "0", "redemptions-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert (rate.status_code, coupon.status_code) == (302, 302)
    assert TaxRate.objects.get().percentage == Decimal("19")
    assert Coupon.objects.get().amount_off == {"USD": "10.00"}
    assert set(Event.objects.values_list("type", flat=True)) == {"tax_rate.created", "coupon.created"}


def test_a_coupon_rule_is_shown_on_its_field_and_nothing_is_saved(client, project):
    _login(client, project, Role.BILLING_ADMIN)

    response = client.post(
        reverse("admin:catalog_coupon_add"),
        {"project": project.pk, "code": "bad", "name": "Bad", "kind": "percentage", "amount_off": "{}",
         "duration": "repeating", "percent_off": "10",
         "redemptions-TOTAL_FORMS": "0", "redemptions-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert response.status_code == 200
    assert "A repeating coupon needs duration_periods." in response.content.decode()
    assert not Coupon.objects.exists()


def test_a_viewer_cannot_add_rates(client, project):
    _login(client, project, Role.VIEWER)

    assert client.get(reverse("admin:catalog_taxrate_add")).status_code == 403


def test_the_customer_page_sets_tax_status_and_rates(client, project):
    _login(client, project, Role.BILLING_ADMIN)
    customer = CustomerFactory(project=project)
    rate = TaxRateFactory(project=project)
    url = reverse("admin:catalog_customer_change", args=[customer.pk])
    form = {
        "project": project.pk, "external_id": customer.external_id, "name": customer.name,
        "email": customer.email, "currency": "USD", "timezone": "UTC",
        "tax_status": "exempt", "tax_rates": [rate.pk], "invoice_emails": "", "invoice_cc": "", "metadata": "",
    }  # fmt: skip

    assert "tax_status" in client.get(url).content.decode()
    response = client.post(url, form)

    customer.refresh_from_db()
    assert response.status_code == 302, response.content.decode()[:2000]
    assert (customer.tax_status, list(customer.tax_rates.all())) == ("exempt", [rate])
