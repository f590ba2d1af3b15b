import pytest

from catalog.models import Charge, Plan
from tests.catalog.factories import CustomerFactory, MeterFactory, ProductFactory, TaxRateFactory, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def product(project):
    return ProductFactory(project=project, code="api", name="API")


@pytest.fixture
def meter(project):
    return MeterFactory(project=project, code="api_calls", name="API calls")


def _plan(product, **fields):
    return {"product": product.public_id, "code": "pro", "name": "Pro", **fields}


PRICING_MODELS = {
    "per_unit": {
        "pricing_model": "per_unit",
        "unit_price": "0.0025",
        "free_units": "1000",
        "minimum_amount": "5",
    },
    "per_unit_12_places": {"pricing_model": "per_unit", "unit_price": "0.000000000001"},
    "graduated": {
        "pricing_model": "graduated",
        "tiers": [
            {"up_to": "1000", "unit_price": "0", "flat_fee": "0"},
            {"up_to": "10000", "unit_price": "0.002", "flat_fee": "5"},
            {"up_to": None, "unit_price": "0.001", "flat_fee": "0"},
        ],
    },
    "volume": {
        "pricing_model": "volume",
        "tiers": [
            {"up_to": "100.5", "unit_price": "1.5", "flat_fee": "10"},
            {"up_to": None, "unit_price": "1", "flat_fee": "0"},
        ],
    },
    "package": {
        "pricing_model": "package",
        "unit_price": "5",
        "package_size": "100",
        "package_rounding": "down",
    },
    "stairstep": {
        "pricing_model": "stairstep",
        "tiers": [
            {"up_to": "10", "unit_price": "0", "flat_fee": "49"},
            {"up_to": None, "unit_price": "0", "flat_fee": "99"},
        ],
    },
    "percentage": {
        "pricing_model": "percentage",
        "percentage_rate": "2.9",
        "fixed_fee_per_event": "0.3",
        "min_fee_per_event": "0.5",
        "max_fee_per_event": "20",
        "free_units": "3",
    },
    "percentage_free_amount": {
        "pricing_model": "percentage",
        "percentage_rate": "1.2",
        "fixed_fee_per_event": "0.1",
        "free_units": "3",
        "free_amount": "500",
    },
    "graduated_percentage": {
        "pricing_model": "graduated_percentage",
        "tiers": [
            {"up_to": "1000", "rate": "1", "flat_fee": "200"},
            {"up_to": "10000", "rate": "2", "flat_fee": "300"},
            {"up_to": None, "rate": "3", "flat_fee": "400"},
        ],
    },
    "dynamic": {"pricing_model": "dynamic", "amount_property": "cost"},
    "graduated_overage": {
        "pricing_model": "graduated",
        "overage_unit_price": "0.15",
        "tiers": [
            {"up_to": "500", "unit_price": "0", "flat_fee": "0"},
            {"up_to": "1000", "unit_price": "0.1", "flat_fee": "0"},
        ],
    },
    "graduated_flat_fee_at_zero": {
        "pricing_model": "graduated",
        "bill_flat_fee_at_zero": True,
        "tiers": [
            {"up_to": "100000", "unit_price": "0", "flat_fee": "200"},
            {"up_to": None, "unit_price": "0.001", "flat_fee": "0"},
        ],
    },
}


@pytest.mark.parametrize("name", sorted(PRICING_MODELS))
def test_each_pricing_model_reads_back_exactly(api, product, meter, name):
    charge = {"meter": "api_calls", "name": "API calls", **PRICING_MODELS[name]}

    created = api.post("/v1/plans", _plan(product, base_fee="49.99", charges=[charge]), format="json")
    fetched = api.get(f"/v1/plans/{created.json()['id']}")

    assert created.status_code == 201, created.json()
    body = fetched.json()
    assert body == created.json()
    assert (body["currency"], body["base_fee"], body["version"], body["superseded"]) == (
        "USD",
        "49.99",
        1,
        False,
    )
    [read] = body["charges"]
    assert read["id"].startswith("chg_")
    expected = {
        "kind": "usage", "timing": "in_arrears", "unit_price": "0", "package_size": None, "package_rounding": "up",
        "percentage_rate": None, "fixed_fee_per_event": None, "min_fee_per_event": None, "max_fee_per_event": None,
        "free_units": "0", "minimum_amount": "0", "tiers": [], "prorate": True, "free_amount": None,
        "amount_property": "amount", "overage_unit_price": None, "bill_flat_fee_at_zero": False, **charge,
    }  # fmt: skip
    assert {key: read[key] for key in expected} == expected


def test_decimals_read_back_in_their_shortest_exact_form(api, product, meter):
    charge = {"meter": "api_calls", "unit_price": "0.0250", "free_units": 1000}

    body = api.post("/v1/plans", _plan(product, base_fee="49.00", charges=[charge]), format="json").json()

    assert (body["base_fee"], body["charges"][0]["unit_price"], body["charges"][0]["free_units"]) == (
        "49",
        "0.025",
        "1000",
    )


def test_fixed_fees_and_base_fee(api, product):
    response = api.post(
        "/v1/plans",
        _plan(product, base_fee="100", base_fee_timing="in_arrears", interval="year", interval_count=1, trial_days=14,
              entitlements={"sso": True, "seats": 10},
              charges=[{"kind": "fixed", "name": "Support", "unit_price": "250", "timing": "in_advance"}]),
        format="json",
    )  # fmt: skip

    body = response.json()
    assert response.status_code == 201
    assert (body["base_fee"], body["base_fee_timing"], body["interval"], body["trial_days"]) == (
        "100",
        "in_arrears",
        "year",
        14,
    )
    assert body["entitlements"] == {"sso": True, "seats": 10}
    assert [(c["kind"], c["unit_price"], c["timing"], c["meter"]) for c in body["charges"]] == [
        ("fixed", "250", "in_advance", None)
    ]


def test_a_fixed_fee_may_be_billed_in_full_for_a_partial_period(api, product):
    charge = {"kind": "fixed", "name": "Setup", "unit_price": "99", "timing": "in_advance", "prorate": False}

    response = api.post("/v1/plans", _plan(product, charges=[charge]), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["charges"][0]["prorate"] is False
    assert Charge.objects.get().prorate is False


# Shapes the schema states are 400 (with the schema's codes); rules it cannot state are 422.
INVALID = [
    ("tiers not ascending", {"pricing_model": "graduated", "tiers": [{"up_to": 100, "unit_price": 1}, {"up_to": 50, "unit_price": 1}, {"up_to": None, "unit_price": 1}]},
     422, "tiers_not_ascending", "charges[0].tiers[1].up_to"),
    ("tiers not contiguous", {"pricing_model": "volume", "tiers": [{"up_to": None, "unit_price": 1}, {"up_to": 50, "unit_price": 1}]},
     422, "tiers_not_contiguous", "charges[0].tiers[0].up_to"),
    ("last tier bounded", {"pricing_model": "graduated", "tiers": [{"up_to": 100, "unit_price": 1}]},
     422, "last_tier_not_open_ended", "charges[0].tiers[0].up_to"),
    ("no tiers", {"pricing_model": "stairstep"}, 422, "tiers_required", "charges[0].tiers"),
    ("zero first bound", {"pricing_model": "graduated", "tiers": [{"up_to": 0, "unit_price": 1}, {"up_to": None, "unit_price": 1}]},
     422, "tiers_not_ascending", "charges[0].tiers[0].up_to"),
    ("package size zero", {"pricing_model": "package", "unit_price": 5, "package_size": 0},
     422, "package_size_not_positive", "charges[0].package_size"),
    ("package size missing", {"pricing_model": "package", "unit_price": 5}, 422, "package_size_not_positive", "charges[0].package_size"),
    ("percentage over 100", {"pricing_model": "percentage", "percentage_rate": "100.5"},
     422, "percentage_out_of_range", "charges[0].percentage_rate"),
    ("percentage over 100 as a number", {"pricing_model": "percentage", "percentage_rate": 100.5},
     400, "invalid_decimal", "charges[0].percentage_rate"),
    ("percentage below 0", {"pricing_model": "percentage", "percentage_rate": "-1"}, 400, "invalid_decimal", "charges[0].percentage_rate"),
    ("min above max", {"pricing_model": "percentage", "percentage_rate": "1", "min_fee_per_event": 5, "max_fee_per_event": 1},
     422, "min_above_max", "charges[0].min_fee_per_event"),
    ("fractional free events", {"pricing_model": "percentage", "percentage_rate": "1", "free_units": "2.5"},
     422, "free_units_not_integer", "charges[0].free_units"),
    ("13 decimal places", {"unit_price": "0.0000000000001"}, 400, "invalid_decimal", "charges[0].unit_price"),
    ("an exponent", {"unit_price": "1e-3"}, 400, "invalid_decimal", "charges[0].unit_price"),
    ("not a number", {"unit_price": "cheap"}, 400, "invalid_decimal", "charges[0].unit_price"),
    ("negative price", {"unit_price": "-1"}, 400, "invalid_decimal", "charges[0].unit_price"),
    ("unknown field", {"unit_prize": "1"}, 400, "unknown_field", "charges[0].unit_prize"),
    ("unknown meter", {"meter": "nope"}, 422, "unknown_meter", "charges[0].meter"),
    ("no meter", {"meter": None}, 422, "meter_required", "charges[0].meter"),
    ("tiers on per_unit", {"tiers": [{"up_to": None, "unit_price": 1}]}, 422, "tiers_not_allowed", "charges[0].tiers"),
    ("unknown model", {"pricing_model": "auction"}, 400, "invalid_pricing_model", "charges[0].pricing_model"),
    ("tier rate over 100", {"pricing_model": "graduated_percentage", "tiers": [{"up_to": None, "rate": "150"}]},
     422, "percentage_out_of_range", "charges[0].tiers[0].rate"),
    ("unit price on a percentage tier", {"pricing_model": "graduated_percentage", "tiers": [{"up_to": None, "unit_price": "1"}]},
     400, "unknown_field", "charges[0].tiers[0]"),
    ("rate on a graduated tier", {"pricing_model": "graduated", "tiers": [{"up_to": None, "rate": "1"}]},
     400, "unknown_field", "charges[0].tiers[0]"),
    ("overage with an open last tier", {"pricing_model": "volume", "overage_unit_price": "1", "tiers": [{"up_to": None, "unit_price": 1}]},
     422, "last_tier_open_ended", "charges[0].tiers[0].up_to"),
    ("overage on per_unit", {"unit_price": "1", "overage_unit_price": "2"}, 422, "overage_not_allowed", "charges[0].overage_unit_price"),
    ("negative overage", {"pricing_model": "graduated", "overage_unit_price": "-1", "tiers": [{"up_to": 5, "unit_price": 1}]},
     400, "invalid_decimal", "charges[0].overage_unit_price"),
    ("free amount on per_unit", {"unit_price": "1", "free_amount": "10"}, 422, "free_amount_not_allowed", "charges[0].free_amount"),
    ("flat fee at zero on per_unit", {"unit_price": "1", "bill_flat_fee_at_zero": True},
     422, "flat_fee_at_zero_not_allowed", "charges[0].bill_flat_fee_at_zero"),
    ("free units on dynamic", {"pricing_model": "dynamic", "free_units": "5"}, 422, "free_units_not_allowed", "charges[0].free_units"),
    ("tiers on dynamic", {"pricing_model": "dynamic", "tiers": [{"up_to": None, "unit_price": 1}]},
     422, "tiers_not_allowed", "charges[0].tiers"),
    ("prorate not a boolean", {"prorate": "no"}, 400, "invalid_type", "charges[0].prorate"),
    ("empty amount property", {"pricing_model": "dynamic", "amount_property": ""}, 400, "min_length", "charges[0].amount_property"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "charge", "status", "code", "param"), INVALID, ids=[case[0] for case in INVALID]
)
def test_each_invalid_charge_has_its_own_code_and_creates_nothing(
    api, product, meter, case, charge, status, code, param
):
    response = api.post(
        "/v1/plans", _plan(product, charges=[{"meter": "api_calls", **charge}]), format="json"
    )

    assert response.status_code == status
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, param)
    assert not Plan.objects.exists()
    assert not Charge.objects.exists()


def test_a_json_number_is_read_as_the_decimal_it_prints_as(api, product, meter):
    charge = {"meter": "api_calls", "unit_price": 0.1 + 0.2, "free_units": 5e-13}

    body = api.post("/v1/plans", _plan(product, charges=[charge]), format="json").json()

    assert (body["charges"][0]["unit_price"], body["charges"][0]["free_units"]) == ("0.3", "0")


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"currency": "EURO"}, "invalid_currency", "currency"),
        ({"currency": "DEM"}, "invalid_currency", "currency"),
        ({"interval_count": 0}, "min_value", "interval_count"),
        ({"interval_count": 366}, "max_value", "interval_count"),
        ({"trial_days": 731}, "max_value", "trial_days"),
        ({"base_fee": "-5"}, "invalid_decimal", "base_fee"),
        ({"interval": "fortnight"}, "invalid_choice", "interval"),
    ],
)
def test_invalid_plan_fields_have_their_own_codes(api, product, fields, code, param):
    response = api.post("/v1/plans", _plan(product, **fields), format="json")

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        400,
        code,
        param,
    )
    assert not Plan.objects.exists()


def test_a_meter_is_priced_once_per_plan(api, product, meter):
    charge = {"meter": "api_calls", "unit_price": "1"}

    response = api.post("/v1/plans", _plan(product, charges=[charge, charge]), format="json")

    assert response.json()["error"]["code"] == "duplicate_meter"


def test_duplicate_code_is_409(api, product):
    api.post("/v1/plans", _plan(product), format="json")

    response = api.post("/v1/plans", _plan(product), format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "plan_code_taken"


def test_repricing_an_unused_plan_changes_it_in_place(api, product, meter):
    plan = api.post("/v1/plans", _plan(product, base_fee="10"), format="json").json()

    response = api.patch(f"/v1/plans/{plan['id']}", {"base_fee": "12"}, format="json")

    assert (response.json()["id"], response.json()["version"], response.json()["base_fee"]) == (
        plan["id"],
        1,
        "12",
    )


def test_repricing_a_plan_in_use_creates_a_version_and_subscriptions_keep_theirs(
    api, project, product, meter
):
    plan = api.post("/v1/plans", _plan(product, base_fee="10", charges=[{"meter": "api_calls", "unit_price": "1"}]),
                    format="json").json()  # fmt: skip
    old = Plan.objects.get(public_id=plan["id"])
    subscription = subscribe(CustomerFactory(project=project), old)

    renamed = api.patch(f"/v1/plans/{plan['id']}", {"name": "Pro (2026)"}, format="json").json()
    repriced = api.patch(
        f"/v1/plans/{plan['id']}", {"charges": [{"meter": "api_calls", "unit_price": "2"}]}, format="json"
    )

    assert renamed["id"] == plan["id"]
    new = repriced.json()
    assert (new["version"], new["previous_version"], new["code"], new["name"]) == (
        2,
        plan["id"],
        "pro",
        "Pro (2026)",
    )
    assert new["charges"][0]["unit_price"] == "2"
    assert new["id"] != plan["id"]
    subscription.refresh_from_db()
    assert subscription.plan_id == old.pk
    assert old.charges.get().unit_price == 1
    listed = [p["id"] for p in api.get("/v1/plans").json()["results"]]
    assert listed == [new["id"]]
    assert len(api.get("/v1/plans?all_versions=true").json()["results"]) == 2
    stale = api.patch(f"/v1/plans/{plan['id']}", {"base_fee": "3"}, format="json")
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "plan_superseded")


def test_a_plan_in_use_is_archived_not_deleted(api, project, product):
    plan = api.post("/v1/plans", _plan(product), format="json").json()
    subscribe(CustomerFactory(project=project), Plan.objects.get(public_id=plan["id"]))

    refused = api.delete(f"/v1/plans/{plan['id']}")
    archived = api.post(f"/v1/plans/{plan['id']}/archive")

    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "in_use")
    assert archived.json()["archived_at"] is not None
    assert api.get("/v1/plans").json()["results"] == []
    assert len(api.get("/v1/plans?archived=true").json()["results"]) == 1


def test_an_unused_plan_can_be_deleted(api, product):
    plan = api.post("/v1/plans", _plan(product), format="json").json()

    assert api.delete(f"/v1/plans/{plan['id']}").status_code == 204
    assert not Plan.objects.exists()


def test_products_and_meters_crud(api):
    product = api.post("/v1/products", {"code": "storage", "name": "Storage"}, format="json").json()
    meter = api.post(
        "/v1/meters",
        {"code": "gb_stored", "name": "GB stored", "unit": "GB", "aggregation": "weighted_sum",
         "filters": [{"property": "tier", "operator": "in", "values": ["hot"]}], "group_by": ["region"]},
        format="json",
    ).json()  # fmt: skip

    renamed = api.patch(f"/v1/products/{product['id']}", {"name": "Object storage"}, format="json").json()

    assert (renamed["name"], renamed["code"]) == ("Object storage", "storage")
    assert (meter["aggregation"], meter["unit"], meter["group_by"]) == ("weighted_sum", "GB", ["region"])
    assert meter["filters"] == [{"property": "tier", "operator": "in", "values": ["hot"]}]
    assert api.get("/v1/meters?code=gb_stored").json()["results"][0]["id"] == meter["id"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"code": "x", "aggregation": "unique_count"}, 422, "property_required", "property"),
        (
            {"code": "x", "filters": [{"property": "a", "operator": "like", "value": "b"}]},
            400,
            "invalid_operator",
            "filters[0].operator",
        ),
        (
            {"code": "x", "filters": [{"property": "a", "operator": "gt", "value": "b"}]},
            400,
            "invalid_filter",
            "filters[0]",
        ),
        (
            {"code": "x", "filters": [{"property": "a", "operator": "in", "values": []}]},
            400,
            "min_items",
            "filters[0].values",
        ),
        (
            {"code": "x", "filters": [{"property": "", "operator": "eq", "value": 1}]},
            400,
            "min_length",
            "filters[0].property",
        ),
        ({"code": "x", "group_by": ["a", "a"]}, 400, "duplicate_item", "group_by"),
        ({"code": "x", "group_by": None}, 400, "null", "group_by"),
        ({"code": "x", "group_by": "a"}, 400, "invalid_type", "group_by"),
        (
            {"code": "x", "filters": [{"property": "a\u0000", "operator": "eq", "value": 1}]},
            400,
            "invalid_characters",
            "filters[0].property",
        ),
        ({"code": "bad code!"}, 400, "invalid_code", "code"),
    ],
)
def test_invalid_meters_are_refused(api, body, status, code, param):
    response = api.post("/v1/meters", body, format="json")

    assert (response.status_code, response.json()["error"]["code"], response.json()["error"]["param"]) == (
        status,
        code,
        param,
    )


def test_tax_rates_are_set_on_a_plan_and_its_charges_and_change_in_place(api, project):
    MeterFactory(project=project, code="calls")
    vat, reduced = TaxRateFactory(project=project), TaxRateFactory(project=project, percentage="5.5")
    body = {
        "product": ProductFactory(project=project).public_id,
        "code": "taxed",
        "name": "Taxed",
        "tax_rates": [vat.public_id],
        "charges": [{"meter": "calls", "unit_price": "0.1", "tax_rates": [reduced.public_id]}],
    }

    created = api.post("/v1/plans", body, format="json")

    assert created.status_code == 201, created.json()
    plan = created.json()
    assert plan["tax_rates"] == [vat.public_id]
    assert plan["charges"][0]["tax_rates"] == [reduced.public_id]
    assert plan["minimum_commitment"] == "0"
    changed = api.patch(f"/v1/plans/{plan['id']}", {"tax_rates": []}, format="json")
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["id"], changed.json()["tax_rates"]) == (plan["id"], [])


def test_an_archived_or_unknown_tax_rate_is_refused_and_nothing_is_created(api, project):
    archived = TaxRateFactory(project=project, archived_at="2026-01-01T00:00:00Z")
    product = ProductFactory(project=project)
    before = Plan.objects.count()

    refused = api.post(
        "/v1/plans",
        {"product": product.public_id, "code": "p", "name": "P", "tax_rates": [archived.public_id]},
        format="json",
    )
    unknown = api.post(
        "/v1/plans",
        {"product": product.public_id, "code": "p", "name": "P", "tax_rates": ["txr_nope"]},
        format="json",
    )

    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "tax_rate_archived")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "not_found")
    assert Plan.objects.count() == before
