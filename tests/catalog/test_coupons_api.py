from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from accounts.models import AuditLogEntry
from catalog.coupons import coupon_redemptions_active
from catalog.models import Coupon, CouponKind, CouponRedemption
from tests.catalog.factories import CouponFactory, CustomerFactory, MeterFactory, make_plan, subscribe
from webhooks.models import Event

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _error(response) -> tuple:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def _events(prefix: str = "coupon.") -> list[str]:
    return list(Event.objects.filter(type__startswith=prefix).order_by("id").values_list("type", flat=True))


def test_create_a_percentage_coupon(api, project):
    plan = make_plan(project, charges=[{"meter": MeterFactory(project=project), "unit_price": "1"}])
    charge = plan.charges.get()

    with time_machine.travel(T0, tick=False):
        response = api.post(
            "/v1/coupons",
            {
                "code": "launch20",
                "name": "Launch",
                "kind": "percentage",
                "percent_off": "20",
                "duration": "repeating",
                "duration_periods": 3,
                "plans": [plan.public_id],
                "charges": [charge.public_id],
                "max_redemptions": 100,
                "redeem_by": "2030-01-01T00:00:00Z",
            },
            format="json",
        )

    body = response.json()
    assert response.status_code == 201
    assert body == {
        "id": body["id"],
        "code": "launch20",
        "name": "Launch",
        "kind": "percentage",
        "percent_off": "20",
        "amount_off": {},
        "duration": "repeating",
        "duration_periods": 3,
        "plans": [plan.public_id],
        "charges": [charge.public_id],
        "max_redemptions": 100,
        "times_redeemed": 0,
        "redeem_by": "2030-01-01T00:00:00Z",
        "created_at": "2026-03-01T12:00:00Z",
        "archived_at": None,
    }
    assert body["id"].startswith("cpn_")
    assert Event.objects.get(type="coupon.created").data == body
    assert AuditLogEntry.objects.filter(action="coupon.created").count() == 1


def test_create_a_fixed_amount_coupon_holds_each_amount_to_its_currency(api):
    body = api.post(
        "/v1/coupons",
        {
            "code": "welcome",
            "name": "Welcome",
            "kind": "fixed_amount",
            "amount_off": {"USD": "10.5", "JPY": 1500, "KWD": "1.125"},
            "duration": "forever",
        },
        format="json",
    ).json()

    assert (body["amount_off"], body["percent_off"], body["duration_periods"]) == (
        {"USD": "10.50", "JPY": "1500", "KWD": "1.125"},
        None,
        None,
    )
    assert Coupon.objects.get().amount_off == {"USD": "10.50", "JPY": "1500", "KWD": "1.125"}


PERCENT = {"code": "c", "name": "C", "kind": "percentage", "percent_off": "10"}
FIXED = {"code": "c", "name": "C", "kind": "fixed_amount", "amount_off": {"USD": "5"}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({**PERCENT, "percent_off": None}, (400, "null", "percent_off")),
        ({**PERCENT, "percent_off": "0"}, (422, "percent_off_out_of_range", "percent_off")),
        ({**PERCENT, "percent_off": "100.5"}, (422, "percent_off_out_of_range", "percent_off")),
        ({**PERCENT, "percent_off": 150}, (400, "invalid_decimal", "percent_off")),
        ({"code": "c", "name": "C", "kind": "percentage"}, (422, "percent_off_required", "percent_off")),
        ({**PERCENT, "amount_off": {"USD": "1"}}, (422, "amount_off_not_allowed", "amount_off")),
        ({**FIXED, "amount_off": {}}, (422, "amount_off_required", "amount_off")),
        ({**FIXED, "percent_off": "5"}, (422, "percent_off_not_allowed", "percent_off")),
        ({**FIXED, "amount_off": {"USD": "0"}}, (422, "amount_not_positive", "amount_off.USD")),
        ({**FIXED, "amount_off": {"USD": "1.005"}}, (422, "too_many_decimal_places", "amount_off.USD")),
        ({**FIXED, "amount_off": {"JPY": "1.5"}}, (422, "too_many_decimal_places", "amount_off.JPY")),
        ({**FIXED, "amount_off": {"usd": "1"}}, (400, "invalid_currency", "amount_off")),
        ({**FIXED, "amount_off": {"USD": "-1"}}, (400, "invalid_decimal", "amount_off.USD")),
        ({**PERCENT, "duration": "repeating"}, (422, "duration_periods_required", "duration_periods")),
        ({**PERCENT, "duration_periods": 2}, (422, "duration_periods_not_allowed", "duration_periods")),
        ({**PERCENT, "duration": "repeating", "duration_periods": 0}, (400, "min_value", "duration_periods")),
        ({**PERCENT, "duration": "weekly"}, (400, "invalid_choice", "duration")),
        ({**PERCENT, "kind": "bogo"}, (400, "invalid_choice", "kind")),
        ({**PERCENT, "plans": ["plan_nope"]}, (422, "not_found", "plans[0]")),
        ({**PERCENT, "charges": ["chg_nope"]}, (422, "not_found", "charges[0]")),
        ({**PERCENT, "redeem_by": "2020-01-01T00:00:00Z"}, (422, "redeem_by_in_past", "redeem_by")),
        ({**PERCENT, "max_redemptions": 0}, (400, "min_value", "max_redemptions")),
        ({**PERCENT, "code": "has space"}, (400, "invalid_code", "code")),
    ],
)
def test_invalid_coupons_are_refused_and_nothing_is_created(api, body, expected):
    response = api.post("/v1/coupons", body, format="json")

    assert _error(response) == expected
    assert not Coupon.objects.exists()
    assert _events() == []


def test_a_plan_of_another_project_is_not_found(api, other_project):
    theirs = make_plan(other_project)

    response = api.post("/v1/coupons", {**PERCENT, "plans": [theirs.public_id]}, format="json")

    assert _error(response) == (422, "not_found", "plans[0]")
    assert not Coupon.objects.exists()


def test_a_code_taken_is_409(api, project):
    CouponFactory(project=project, code="c")

    response = api.post("/v1/coupons", PERCENT, format="json")

    assert _error(response) == (409, "coupon_code_taken", "code")
    assert Coupon.objects.count() == 1


def test_list_filters_and_archived(api, project, other_project):
    live = CouponFactory(project=project, code="a_live")
    fixed = CouponFactory(project=project, code="b_fixed", kind=CouponKind.FIXED_AMOUNT)
    old = CouponFactory(project=project, code="c_old")
    CouponFactory(project=other_project)
    api.post(f"/v1/coupons/{old.public_id}/archive")

    def ids(query: str) -> list[str]:
        return [c["id"] for c in api.get(f"/v1/coupons{query}").json()["results"]]

    assert ids("") == [fixed.public_id, live.public_id]  # newest first
    assert ids("?kind=fixed_amount") == [fixed.public_id]
    assert ids("?archived=true") == [old.public_id]
    assert ids("?code=a_live") == [live.public_id]


def test_patch_changes_name_limit_and_deadline_only(api, project):
    coupon = CouponFactory(project=project, name="Old")

    response = api.patch(
        f"/v1/coupons/{coupon.public_id}",
        {"name": "New", "max_redemptions": 5, "redeem_by": "2030-01-01T00:00:00Z"},
        format="json",
    )
    refused = api.patch(f"/v1/coupons/{coupon.public_id}", {"percent_off": "50"}, format="json")

    body = response.json()
    assert (body["name"], body["max_redemptions"], body["redeem_by"], body["percent_off"]) == (
        "New",
        5,
        "2030-01-01T00:00:00Z",
        "20",
    )
    assert _error(refused) == (400, "unknown_field", "percent_off")
    assert _events() == ["coupon.updated"]


def test_max_redemptions_cannot_go_below_what_was_redeemed(api, project):
    coupon = CouponFactory(project=project, max_redemptions=5)
    for _ in range(2):
        api.post(
            f"/v1/customers/{CustomerFactory(project=project).public_id}/coupons",
            {"coupon": coupon.code},
            format="json",
        )

    response = api.patch(f"/v1/coupons/{coupon.public_id}", {"max_redemptions": 1}, format="json")

    assert _error(response) == (422, "max_redemptions_below_redeemed", "max_redemptions")
    coupon.refresh_from_db()
    assert coupon.max_redemptions == 5


def test_archive_records_once_and_an_archived_coupon_does_not_change(api, project):
    coupon = CouponFactory(project=project)

    first = api.post(f"/v1/coupons/{coupon.public_id}/archive")
    again = api.post(f"/v1/coupons/{coupon.public_id}/archive")
    patched = api.patch(f"/v1/coupons/{coupon.public_id}", {"name": "X"}, format="json")

    assert first.json()["archived_at"] is not None
    assert first.json()["archived_at"] == again.json()["archived_at"]
    assert _error(patched) == (422, "coupon_archived", None)
    assert _events() == ["coupon.created", "coupon.archived"][1:]


# --- redemptions ------------------------------------------------------------------------------------


def test_redeem_by_code_lists_and_removes(api, project):
    customer = CustomerFactory(project=project)
    coupon = CouponFactory(project=project, code="launch20")

    with time_machine.travel(T0, tick=False):
        created = api.post(
            f"/v1/customers/{customer.public_id}/coupons", {"coupon": "launch20"}, format="json"
        )
    listed = api.get(f"/v1/customers/{customer.external_id}/coupons").json()["results"]
    removed = api.delete(f"/v1/customers/{customer.public_id}/coupons/{created.json()['id']}")
    again = api.delete(f"/v1/customers/{customer.public_id}/coupons/{created.json()['id']}")

    body = created.json()
    assert created.status_code == 201
    assert body == {
        "id": body["id"],
        "coupon": {**body["coupon"], "id": coupon.public_id, "code": "launch20", "times_redeemed": 1},
        "customer": customer.public_id,
        "subscription": None,
        "created_at": "2026-03-01T12:00:00Z",
        "removed_at": None,
    }
    assert body["id"].startswith("cpr_")
    assert [r["id"] for r in listed] == [body["id"]]
    assert removed.status_code == again.status_code == 204
    assert api.get(f"/v1/customers/{customer.public_id}/coupons").json()["results"] == []
    assert CouponRedemption.objects.get().removed_at is not None
    assert _events() == ["coupon.redeemed", "coupon.redemption_removed"]
    assert Event.objects.get(type="coupon.redeemed").data == body


def test_redeem_by_id_for_one_subscription(api, project):
    customer = CustomerFactory(project=project)
    subscription = subscribe(customer, make_plan(project))
    coupon = CouponFactory(project=project)

    body = api.post(
        f"/v1/customers/{customer.public_id}/coupons",
        {"coupon": coupon.public_id, "subscription": subscription.public_id},
        format="json",
    ).json()

    assert body["subscription"] == subscription.public_id


def _redeem_refused(api, project, customer, body) -> tuple:
    before = (CouponRedemption.objects.count(), Event.objects.filter(type__startswith="coupon.").count())
    response = api.post(f"/v1/customers/{customer.public_id}/coupons", body, format="json")
    after = (CouponRedemption.objects.count(), Event.objects.filter(type__startswith="coupon.").count())
    assert before == after
    return _error(response)


def test_redemption_refusals(api, project, other_project):
    customer = CustomerFactory(project=project, currency="USD")
    other_customer = CustomerFactory(project=project)
    theirs = subscribe(other_customer, make_plan(project))
    CouponFactory(project=project, code="archived", archived_at=T0)
    CouponFactory(project=project, code="expired", redeem_by=datetime(2020, 1, 1, tzinfo=UTC))
    CouponFactory(project=project, code="euros", kind=CouponKind.FIXED_AMOUNT, amount_off={"EUR": "5.00"})
    CouponFactory(project=project, code="fine")
    CouponFactory(project=other_project, code="elsewhere")

    assert [
        _redeem_refused(api, project, customer, body)
        for body in (
            {"coupon": "archived"},
            {"coupon": "expired"},
            {"coupon": "euros"},
            {"coupon": "elsewhere"},
            {"coupon": "nope"},
            {"coupon": "fine", "subscription": theirs.public_id},
            {"coupon": "fine", "subscription": "sub_nope"},
            {"coupon": "fine", "extra": 1},
        )
    ] == [
        (422, "coupon_archived", "coupon"),
        (422, "coupon_expired", "coupon"),
        (422, "coupon_currency_unavailable", "coupon"),
        (422, "not_found", "coupon"),
        (422, "not_found", "coupon"),
        (422, "subscription_not_of_customer", "subscription"),
        (422, "not_found", "subscription"),
        (400, "unknown_field", "extra"),
    ]


def test_max_redemptions_counts_removed_ones(api, project):
    coupon = CouponFactory(project=project, max_redemptions=1)
    first = CustomerFactory(project=project)
    redemption = api.post(
        f"/v1/customers/{first.public_id}/coupons", {"coupon": coupon.code}, format="json"
    ).json()
    api.delete(f"/v1/customers/{first.public_id}/coupons/{redemption['id']}")

    refused = _redeem_refused(api, project, CustomerFactory(project=project), {"coupon": coupon.code})

    assert refused == (422, "coupon_max_redemptions_reached", "coupon")


def test_the_same_coupon_twice_is_409_until_removed(api, project):
    customer = CustomerFactory(project=project)
    subscription = subscribe(customer, make_plan(project))
    coupon = CouponFactory(project=project, code="twice")
    url = f"/v1/customers/{customer.public_id}/coupons"
    first = api.post(url, {"coupon": "twice"}, format="json").json()
    on_subscription = {"coupon": "twice", "subscription": subscription.public_id}
    api.post(url, on_subscription, format="json")

    customer_wide = _redeem_refused(api, project, customer, {"coupon": "twice"})
    subscription_twice = _redeem_refused(api, project, customer, on_subscription)
    api.delete(f"{url}/{first['id']}")

    assert customer_wide == (409, "coupon_already_applied", "coupon")
    assert subscription_twice == (409, "coupon_already_applied", "coupon")
    assert api.post(url, {"coupon": "twice"}, format="json").status_code == 201
    assert coupon.redemptions.count() == 3


def test_another_customers_redemption_is_not_found(api, project):
    customer, other = CustomerFactory(project=project), CustomerFactory(project=project)
    coupon = CouponFactory(project=project)
    theirs = api.post(
        f"/v1/customers/{other.public_id}/coupons", {"coupon": coupon.code}, format="json"
    ).json()

    response = api.delete(f"/v1/customers/{customer.public_id}/coupons/{theirs['id']}")

    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert CouponRedemption.objects.get().removed_at is None


def test_coupon_redemptions_active_for_a_subscription(api, project):
    customer = CustomerFactory(project=project)
    subscription = subscribe(customer, make_plan(project))
    other_subscription = subscribe(customer, make_plan(project))
    url = f"/v1/customers/{customer.public_id}/coupons"
    coupons = [CouponFactory(project=project, code=f"c{n}") for n in range(4)]
    with time_machine.travel(T0, tick=False):
        api.post(url, {"coupon": "c0", "subscription": subscription.public_id}, format="json")
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        api.post(url, {"coupon": "c1"}, format="json")
        api.post(url, {"coupon": "c2", "subscription": other_subscription.public_id}, format="json")
        removed = api.post(url, {"coupon": "c3"}, format="json").json()
    api.delete(f"{url}/{removed['id']}")
    api.post(f"/v1/coupons/{coupons[1].public_id}/archive")  # still applies: it was redeemed before

    active = coupon_redemptions_active(subscription=subscription)

    assert [r.coupon.code for r in active] == ["c0", "c1"]
    assert all(r.coupon.percent_off == Decimal("20") for r in active)


def test_a_billing_admin_applies_a_coupon_from_the_customer_page_and_a_viewer_may_not(client, project):
    from django.urls import reverse

    from accounts.models import Role
    from tests.accounts.factories import MembershipFactory

    customer = CustomerFactory(project=project)
    coupon = CouponFactory(project=project, code="welcome", name="Welcome")
    url = reverse("admin:catalog_customer_coupon", args=[customer.pk])
    client.force_login(MembershipFactory(project=project, role=Role.VIEWER).user)
    assert client.post(url, {"coupon": coupon.pk}).status_code == 403
    client.force_login(MembershipFactory(project=project, role=Role.BILLING_ADMIN).user)

    page = client.get(reverse("admin:catalog_customer_change", args=[customer.pk])).content.decode()
    applied = client.post(url, {"coupon": coupon.pk})

    assert "Apply a coupon…" in page
    assert applied.status_code == 302
    assert list(customer.coupon_redemptions.values_list("coupon__code", "subscription")) == [
        ("welcome", None)
    ]
    shown = client.get(reverse("admin:catalog_customer_change", args=[customer.pk])).content.decode()
    assert "Welcome — every subscription" in shown
