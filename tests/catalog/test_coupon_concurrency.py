"""Redemptions of one coupon at once, on PostgreSQL with real concurrent connections: the coupon row
lock makes them count one after another, so max_redemptions is never exceeded."""

import pytest

from billing_site.errors import DomainError, Unprocessable
from catalog.coupons import coupon_redeem
from catalog.models import CouponRedemption
from tests.catalog.factories import CouponFactory, CustomerFactory
from tests.concurrency import all_at_once
from webhooks.models import Event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RUNS = 6
LIMIT = 2


def test_concurrent_redemptions_never_exceed_max_redemptions(project):
    coupon = CouponFactory(project=project, max_redemptions=LIMIT)
    pending = [CustomerFactory(project=project) for _ in range(RUNS)]  # one customer per thread

    def redeem():
        customer = pending.pop()
        try:
            coupon_redeem(customer=customer, coupon=coupon, actor=None)
        except Unprocessable as error:
            return error.code
        return "redeemed"

    results = all_at_once(redeem, RUNS)

    assert sorted(results) == ["coupon_max_redemptions_reached"] * (RUNS - LIMIT) + ["redeemed"] * LIMIT
    assert CouponRedemption.objects.filter(coupon=coupon).count() == LIMIT
    assert Event.objects.filter(type="coupon.redeemed").count() == LIMIT


def test_concurrent_redemptions_for_one_customer_apply_it_once(project):
    coupon = CouponFactory(project=project)
    customer = CustomerFactory(project=project)

    def redeem():
        try:
            coupon_redeem(customer=customer, coupon=coupon, actor=None)
        except DomainError as error:
            return error.code
        return "redeemed"

    results = all_at_once(redeem, RUNS)

    assert sorted(results) == ["coupon_already_applied"] * (RUNS - 1) + ["redeemed"]
    assert CouponRedemption.objects.filter(coupon=coupon, customer=customer).count() == 1
