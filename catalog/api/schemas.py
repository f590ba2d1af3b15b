"""The JSON Schemas of the catalog's JSON-valued request fields: the OpenAPI document shows them
and the API validates with them (billing_site.api.fields.SchemaJSONField), so both say the same.

What a schema cannot state (tiers in ascending order, a tiered model needs tiers, a package size
above zero) is checked by catalog.pricing.clean_pricing and answered with 422.
"""

from drf_spectacular.utils import OpenApiParameter

from billing_site.api.json_values import decimal_schema
from catalog.pricing import (
    DEFAULT_AMOUNT_PROPERTY,
    PERCENTAGE_PLACES,
    PRICE_DIGITS,
    PRICE_PLACES,
    PROPERTY_MAX_LENGTH,
    ChargeKind,
    FeeTiming,
    PackageRounding,
    PricingModel,
)

MAX_CHARGES = 50
MAX_TIERS = 100
PRICE_INTEGER_DIGITS = PRICE_DIGITS - PRICE_PLACES


def price_schema(*, nullable: bool = False, **extra) -> dict:
    return decimal_schema(
        integer_digits=PRICE_INTEGER_DIGITS, places=PRICE_PLACES, nullable=nullable, example="0.0025", **extra
    )


TIER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "up_to": price_schema(
            nullable=True, description="Inclusive upper bound; null (or absent) on the last tier."
        ),
        "unit_price": price_schema(description="Default 0. Not on graduated_percentage tiers."),
        "rate": decimal_schema(
            integer_digits=3,
            places=PERCENTAGE_PLACES,
            maximum=100,
            example="1.5",
            description="graduated_percentage tiers only: the percentage of the tier's units, 0 to 100.",
        ),
        "flat_fee": price_schema(description="Charged once when usage reaches the tier. Default 0."),
    },
}

CHARGE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "description": "How a charge is priced (docs/pricing.md). Decimals are numbers or decimal strings.",
    "properties": {
        "kind": {"enum": ChargeKind.values, "default": ChargeKind.USAGE},
        "name": {"type": "string", "maxLength": 200, "description": "Shown on invoice lines."},
        "meter": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": 100,
            "description": "The meter's code or ID (usage charges).",
        },
        "pricing_model": {
            "enum": PricingModel.values,
            "default": PricingModel.PER_UNIT,
            "x-error-code": "invalid_pricing_model",
        },
        "unit_price": price_schema(description="Per unit, per package, or the fixed fee. Default 0."),
        "package_size": price_schema(nullable=True, description="package: units per package (above 0)."),
        "package_rounding": {"enum": PackageRounding.values, "default": PackageRounding.UP},
        "percentage_rate": decimal_schema(
            integer_digits=3,
            places=PERCENTAGE_PLACES,
            maximum=100,
            nullable=True,
            description="percentage: 0 to 100.",
        ),
        "fixed_fee_per_event": price_schema(nullable=True),
        "min_fee_per_event": price_schema(nullable=True),
        "max_fee_per_event": price_schema(nullable=True),
        "free_units": price_schema(description="Included usage, free of charge. Default 0."),
        "minimum_amount": price_schema(description="The charge is at least this much. Default 0."),
        "tax_rates": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 40},
            "maxItems": 20,
            "example": ["txr_4Zt8oP1qV2"],
            "description": "Tax rates (txr_…) of this charge's lines; empty: the plan's, else the "
            "customer's, else the project's defaults.",
        },
        "tiers": {"type": "array", "items": TIER_SCHEMA, "maxItems": MAX_TIERS},
        "timing": {"enum": FeeTiming.values, "description": "Fixed fees only: in_advance or in_arrears."},
        "prorate": {
            "type": "boolean",
            "default": True,
            "example": False,
            "description": "Fixed fees: prorate a partial period by time; false bills it in full.",
        },
        "free_amount": price_schema(
            nullable=True,
            description="percentage: the first this much of summed value pays no rate (with free_units, "
            "whichever runs out first ends both).",
        ),
        "amount_property": {
            "type": "string",
            "minLength": 1,
            "maxLength": PROPERTY_MAX_LENGTH,
            "default": DEFAULT_AMOUNT_PROPERTY,
            "example": "cost",
            "description": "dynamic: the event property (a JSON number) holding each event's amount.",
        },
        "overage_unit_price": price_schema(
            nullable=True,
            description="graduated, volume, stairstep: the price of each unit beyond a bounded last tier "
            "(the last tier then has a numeric up_to).",
        ),
        "bill_flat_fee_at_zero": {
            "type": "boolean",
            "default": False,
            "example": True,
            "description": "Tiered: bill tier 1's flat fee even with nothing billable (as Stripe does).",
        },
    },
}

CHARGES_SCHEMA = {"type": "array", "items": CHARGE_SCHEMA, "maxItems": MAX_CHARGES}

ENTITLEMENTS_SCHEMA = {
    "type": "object",
    "description": "Feature flags and quotas: at most 100 keys of 1 to 100 characters; values are "
    "booleans, whole numbers or strings of at most 200 characters.",
    "maxProperties": 100,
    "propertyNames": {"minLength": 1, "maxLength": 100},
    "additionalProperties": {
        "oneOf": [
            {"type": "boolean"},
            {"type": "integer", "minimum": -(10**15), "maximum": 10**15},
            {"type": "string", "maxLength": 200},
        ]
    },
    "example": {"sso": True, "seats": 10},
}

# The path parameter of every route under /v1/customers/{id}/.
CUSTOMER_PARAMETER = OpenApiParameter(
    "id", str, OpenApiParameter.PATH, description="The customer's ID (cus_…) or your external_id."
)
