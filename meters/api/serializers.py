from decimal import Decimal

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from billing_site.api.fields import MOMENT_SCHEMA, MomentField, RejectUnknownFieldsMixin
from billing_site.api.json_values import SchemaJSONField
from meters.ingestion import (
    ALIASED_FIELDS,
    CUSTOMER_FIELDS,
    MAX_CUSTOMER_LENGTH,
    MAX_EVENTS,
    MAX_INTEGER_DIGITS,
    MAX_KEY_LENGTH,
    MAX_METER_LENGTH,
    MAX_PRODUCT_LENGTH,
    MAX_PROPERTIES_BYTES,
    MAX_PROPERTIES_DEPTH,
    MAX_SUBSCRIPTION_LENGTH,
    SUBSCRIPTION_FIELDS,
    VALUE_TEXT_PATTERN,
)
from meters.models import (
    MAX_ROUNDING_PRECISION,
    VALUE_PLACES,
    Aggregation,
    Bucket,
    FilterOperator,
    Meter,
    Rounding,
    WeightedInput,
    code_validator,
)
from meters.services import MAX_GROUP_BY, MAX_PROPERTY_LENGTH
from subscriptions.api.serializers import PeriodSerializer


class MeterSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)

    class Meta:
        model = Meter
        fields = [
            "id",
            "code",
            "name",
            "unit",
            "aggregation",
            "property",
            "filters",
            "group_by",
            "whole_numbers_only",
            "allow_negative",
            "bucket",
            "rounding",
            "rounding_precision",
            "weighted_input",
            "created_at",
            "archived_at",
        ]
        read_only_fields = fields


PROPERTY_NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_PROPERTY_LENGTH}
_FILTER_VALUE = {"oneOf": [{"type": "string", "maxLength": 200}, {"type": "number"}]}
FILTERS_SCHEMA = {
    "type": "array",
    "maxItems": 20,
    "description": "Events must match every filter: `in` / `not_in` a list of `values`; `eq` / `neq` "
    "a `value`; `gt`, `gte`, `lt`, `lte` a number `value`.",
    "example": [{"property": "region", "operator": "in", "values": ["eu"]}],
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["property", "operator"],
        "properties": {
            "property": PROPERTY_NAME_SCHEMA,
            "operator": {"enum": FilterOperator.values, "x-error-code": "invalid_operator"},
            "value": _FILTER_VALUE,
            "values": {"type": "array", "minItems": 1, "maxItems": 100, "items": _FILTER_VALUE},
        },
        "x-error-code": "invalid_filter",
        "x-error-message": "`in` and `not_in` take `values` (a list); `eq` and `neq` a `value`; "
        "`gt`, `gte`, `lt` and `lte` a number `value`.",
        "oneOf": [
            {"properties": {"operator": {"enum": ["in", "not_in"]}}, "required": ["values"]},
            {"properties": {"operator": {"enum": ["eq", "neq"]}}, "required": ["value"]},
            {
                "properties": {"operator": {"enum": ["gt", "gte", "lt", "lte"]}, "value": {"type": "number"}},
                "required": ["value"],
            },
        ],
    },
}
GROUP_BY_SCHEMA = {
    "type": "array",
    "maxItems": MAX_GROUP_BY,
    "uniqueItems": True,
    "items": PROPERTY_NAME_SCHEMA,
    "description": "Event properties usage can be broken down by.",
    "example": ["project", "region"],
}


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Peak concurrent instances per hour, summed",
            value={
                "code": "instances",
                "aggregation": "max",
                "property": "running",
                "bucket": "hour",
                "group_by": ["region"],
            },
            request_only=True,
        ),
        OpenApiExample(
            "GB-hours rounded up to whole GB-hours",
            value={"code": "gb_hours", "aggregation": "sum", "rounding": "ceil", "rounding_precision": 0},
            request_only=True,
        ),
        OpenApiExample(
            "Average response time in ms, 2 decimals",
            value={
                "code": "latency",
                "aggregation": "avg",
                "property": "ms",
                "rounding": "round",
                "rounding_precision": 2,
            },
            request_only=True,
        ),
        OpenApiExample(
            "Storage from +/- changes, time-weighted",
            value={"code": "gb_stored", "aggregation": "weighted_sum", "weighted_input": "increment"},
            request_only=True,
        ),
    ]
)
class MeterWriteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    code = serializers.CharField(max_length=100, validators=[code_validator])
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    unit = serializers.CharField(max_length=50, required=False, allow_blank=True)
    aggregation = serializers.ChoiceField(
        choices=Aggregation.choices,
        required=False,
        help_text="How events add up (default sum): count, sum, max, min, avg (the mean value; 0 "
        "without events), unique_count, latest, weighted_sum.",
    )
    property = serializers.CharField(
        max_length=MAX_PROPERTY_LENGTH,
        required=False,
        allow_blank=True,
        help_text="The event property aggregated; blank: the event's value.",
    )
    filters = SchemaJSONField(schema=FILTERS_SCHEMA, required=False)
    group_by = SchemaJSONField(schema=GROUP_BY_SCHEMA, required=False)
    whole_numbers_only = serializers.BooleanField(required=False)
    allow_negative = serializers.BooleanField(required=False)
    bucket = serializers.ChoiceField(
        choices=Bucket.choices,
        required=False,
        allow_null=True,
        help_text="Aggregate per UTC `hour` or `day` (per subscription and per group of group_by) and "
        "sum the bucket results: max with hour bills the peak of every hour, summed. Null (default): "
        "over the whole period. Any aggregation but weighted_sum (else 422 bucket_not_supported).",
    )
    rounding = serializers.ChoiceField(
        choices=Rounding.choices,
        required=False,
        allow_null=True,
        help_text="Round the period's quantity (and each group's) before pricing and in usage: `round` "
        "(half up), `ceil` or `floor`, to rounding_precision decimals. Null (default): exact.",
    )
    rounding_precision = serializers.IntegerField(
        min_value=0,
        max_value=MAX_ROUNDING_PRECISION,
        required=False,
        help_text=f"Decimal places the rounding keeps, 0 (default) to {MAX_ROUNDING_PRECISION}. Above 0 "
        "needs a rounding (else 422 rounding_required).",
    )
    weighted_input = serializers.ChoiceField(
        choices=WeightedInput.choices,
        required=False,
        help_text="weighted_sum meters only (else 422 weighted_input_not_supported): `level` (default), "
        "each value is the level from then on; `increment`, each value changes the level (+/-), which "
        "is the running sum of all the subscription's values so far, those before the period included.",
    )


# --- usage ----------------------------------------------------------------------------------------
# Response shapes, for the schema and for rendering. Requests are read by meters.ingestion (events)
# and UsageSummaryQuery (query parameters).


def format_quantity(value: Decimal) -> str:
    """A quantity as a plain decimal string: "1240", "0.5" (never an exponent)."""
    return format(value, "f")


class UsageResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "unmatched", "rejected"])
    id = serializers.CharField(required=False, help_text="The stored event (evt_…); absent when rejected.")
    code = serializers.CharField(
        required=False, help_text="Why the event is unmatched or was rejected (a stable code)."
    )
    message = serializers.CharField(required=False)
    param = serializers.CharField(required=False, help_text="The field at fault, e.g. events[3].value.")


class UsageIngestResponseSerializer(serializers.Serializer):
    results = UsageResultSerializer(many=True)
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    unmatched = serializers.IntegerField()
    rejected = serializers.IntegerField()


_VALUE_SCHEMA = {
    "oneOf": [{"type": "number"}, {"type": "string", "pattern": VALUE_TEXT_PATTERN}],
    "description": f"The quantity: |value| < 10^{MAX_INTEGER_DIGITS}, at most {VALUE_PLACES} decimal places "
    f"(else 422 value_out_of_range). A decimal string is exact; a JSON number with a fraction is "
    f"rounded to {VALUE_PLACES} places.",
}
_CUSTOMER = {"type": "string", "minLength": 1, "maxLength": MAX_CUSTOMER_LENGTH}
_SUBSCRIPTION = {"type": "string", "minLength": 1, "maxLength": MAX_SUBSCRIPTION_LENGTH}
_METER = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_METER_LENGTH}
_PRODUCT = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_PRODUCT_LENGTH}
_TIMESTAMP = {
    **MOMENT_SCHEMA,
    "type": ["string", "null"],
    "description": "When the usage happened (alias: occurred_at); default (or null): when received. "
    f"{MOMENT_SCHEMA['description']} More than 5 minutes ahead is 422 timestamp_in_future.",
}
_EVENT_PROPERTIES = {
    "customer": {
        **_CUSTOMER,
        "description": "The customer: its external_id, or its ID (cus_…). Aliases: customer_id, "
        "external_customer_id; stripeCustomerId names it by its processor_customer_id. May be left out "
        "when subscription is given.",
    },
    "customer_id": {**_CUSTOMER, "description": "Alias of customer."},
    "external_customer_id": {**_CUSTOMER, "description": "Alias of customer."},
    "stripeCustomerId": {
        **_CUSTOMER,
        "description": "The customer by its processor_customer_id (Stripe's cus_…): alias of customer.",
    },
    "subscription": {
        **_SUBSCRIPTION,
        "description": "The subscription the usage is billed on (alias: subscription_id): its ID (sub_…) or "
        "its external_reference. It names the customer too; the event is stored matched to it or refused "
        "(422 not_priced_by_subscription when it does not price the meter at the event's time).",
    },
    "subscription_id": {**_SUBSCRIPTION, "description": "Alias of subscription."},
    "meter": {
        **_METER,
        "description": "The meter's code (alias: event_name; meter_id also takes the meter's ID, mtr_…). May "
        "be left out when the product, or else the customer's subscriptions, price exactly one meter.",
    },
    "event_name": {**_METER, "description": "Alias of meter."},
    "meter_id": {**_METER, "description": "The meter's ID (mtr_…) or its code: alias of meter."},
    "productId": {
        **_PRODUCT,
        "description": "A product, by its ID (prod_…) or code (alias: product_item): the meter is the one "
        "its plans' usage charges price (or, with meter, must be one of them).",
    },
    "product_item": {**_PRODUCT, "description": "Alias of productId."},
    "value": {
        **_VALUE_SCHEMA,
        "description": "The quantity (aliases: units, quantity). Optional for a meter that counts events "
        "(count, unique_count): 1. " + _VALUE_SCHEMA["description"],
    },
    "units": {**_VALUE_SCHEMA, "description": "Alias of value."},
    "quantity": {**_VALUE_SCHEMA, "description": "Alias of value."},
    "timestamp": _TIMESTAMP,
    "occurred_at": {**_TIMESTAMP, "description": "Alias of timestamp."},
    "properties": {
        "type": ["object", "null"],
        "description": f"Free-form; meters filter and group by them. At most {MAX_PROPERTIES_DEPTH} levels "
        f"deep and {MAX_PROPERTIES_BYTES} bytes serialized (else 422 properties_too_large).",
    },
    "idempotency_key": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "description": "Deduplicates permanently within the project: a repeat is reported as duplicate.",
    },
}
# Two names for one field (value and units, meter and event_name, …) are refused: `conflicting_fields`.
_ONE_NAME_EACH = [
    {"required": [first, second]}
    for names in ALIASED_FIELDS
    for position, first in enumerate(names)
    for second in names[position + 1 :]
]
USAGE_EVENT_SCHEMA = {
    "type": "object",
    # Any other field is refused (400 unknown_field): data of your own goes in properties. This also
    # keeps `{"events": [...]}`, the list form, from reading as an event.
    "additionalProperties": False,
    "anyOf": [{"required": [name]} for name in (*CUSTOMER_FIELDS, *SUBSCRIPTION_FIELDS)],
    "properties": _EVENT_PROPERTIES,
    "not": {"anyOf": _ONE_NAME_EACH},
}
# In a list, each element is checked on its own and reported in `results` (partial success), so a
# list may hold anything: an element that is not a valid event is rejected there, not the request.
_BATCH_ITEMS = {"anyOf": [USAGE_EVENT_SCHEMA, {}]}
USAGE_REQUEST_SCHEMA = {
    "oneOf": [
        USAGE_EVENT_SCHEMA,
        {"type": "array", "items": _BATCH_ITEMS, "minItems": 1, "maxItems": MAX_EVENTS},
        {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {
                "events": {"type": "array", "items": _BATCH_ITEMS, "minItems": 1, "maxItems": MAX_EVENTS}
            },
        },
    ]
}


class DimensionQuantitySerializer(serializers.Serializer):
    dimensions = serializers.DictField(child=serializers.CharField(allow_null=True))
    quantity = serializers.CharField()


class MeterUsageSerializer(serializers.Serializer):
    meter = serializers.CharField(source="meter.code")
    meter_id = serializers.CharField(source="meter.public_id")
    name = serializers.CharField(source="meter.name")
    unit = serializers.CharField(source="meter.unit")
    aggregation = serializers.CharField(source="meter.aggregation")
    quantity = serializers.SerializerMethodField()
    breakdown = serializers.SerializerMethodField()

    def get_quantity(self, usage) -> str:
        return format_quantity(usage.quantity)

    def get_breakdown(self, usage) -> list[dict]:
        return [
            {"dimensions": dimensions, "quantity": format_quantity(amount)}
            for dimensions, amount in usage.breakdown
        ]


class SubscriptionUsageSerializer(serializers.Serializer):
    subscription = serializers.CharField(source="subscription.public_id")
    plan = serializers.CharField(source="subscription.plan.public_id")
    status = serializers.CharField(source="subscription.current_status")
    period = PeriodSerializer()
    meters = MeterUsageSerializer(many=True)


class CustomerUsageSerializer(serializers.Serializer):
    customer = serializers.CharField()
    as_of = serializers.DateTimeField()
    subscriptions = SubscriptionUsageSerializer(many=True)


class UsageSummaryQuery(serializers.Serializer):
    """The query parameters of GET /v1/usage/summary (`from` is declared in get_fields: it is a
    Python keyword)."""

    to = MomentField(help_text="End of the window (exclusive), ISO 8601.")
    customer = serializers.CharField(
        required=False, trim_whitespace=False, help_text="Only this customer: its ID (cus_…) or external_id."
    )
    meter = serializers.CharField(
        required=False, trim_whitespace=False, help_text="Meter codes, comma-separated (default: all)."
    )
    group_by = serializers.CharField(
        required=False,
        trim_whitespace=False,
        help_text="Dimensions, comma-separated: `customer`, or event property names (`properties.` "
        "prefix optional; needed for a property called meter or customer). Results are always per meter.",
    )
    granularity = serializers.ChoiceField(
        choices=["hour", "day"], default="day", help_text="Bucket size (UTC hours or days)."
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = MomentField(help_text="Start of the window (inclusive), ISO 8601.")
        return fields


class SummaryBucketSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    quantity = serializers.CharField()


class SummaryGroupSerializer(serializers.Serializer):
    meter = serializers.CharField()
    dimensions = serializers.DictField(child=serializers.CharField(allow_null=True))
    quantity = serializers.CharField()
    buckets = SummaryBucketSerializer(many=True)


class UsageSummarySerializer(serializers.Serializer):
    results = SummaryGroupSerializer(many=True)
