from decimal import Decimal

from rest_framework import serializers

from billing_site.api.fields import RejectUnknownFieldsMixin
from meters.models import Aggregation, Meter, code_validator
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
            "created_at",
            "archived_at",
        ]
        read_only_fields = fields


class MeterWriteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    code = serializers.CharField(max_length=100, validators=[code_validator])
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    unit = serializers.CharField(max_length=50, required=False, allow_blank=True)
    aggregation = serializers.ChoiceField(choices=Aggregation.choices, required=False)
    property = serializers.CharField(max_length=100, required=False, allow_blank=True)
    filters = serializers.JSONField(
        required=False, help_text='[{"property": "region", "operator": "in", "values": ["eu"]}]'
    )
    group_by = serializers.JSONField(required=False, help_text='["project", "region"]')
    whole_numbers_only = serializers.BooleanField(required=False)
    allow_negative = serializers.BooleanField(required=False)


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


_EVENT_PROPERTIES = {
    "customer": {"type": "string", "maxLength": 255, "description": "The customer's external_id."},
    "meter": {
        "type": "string",
        "maxLength": 100,
        "description": "The meter's code (alias: event_name). May be left out when the customer's "
        "subscriptions price exactly one meter.",
    },
    "event_name": {"type": "string", "description": "Alias of meter."},
    "value": {
        "oneOf": [
            {"type": "number"},
            {"type": "string", "pattern": r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"},
        ],
        "description": "The quantity (aliases: units, quantity): |value| < 10^20, up to 12 decimal "
        "places. A decimal string is exact; a JSON number with a fraction is rounded to 12 places.",
    },
    "units": {"oneOf": [{"type": "number"}, {"type": "string"}], "description": "Alias of value."},
    "quantity": {"oneOf": [{"type": "number"}, {"type": "string"}], "description": "Alias of value."},
    "timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "When the usage happened (ISO 8601; default: when received). At most 5 minutes ahead.",
    },
    "properties": {
        "type": "object",
        "description": "Free-form; meters filter and group by them. At most 5 levels deep and 8 KiB.",
    },
    "idempotency_key": {
        "type": "string",
        "maxLength": 255,
        "description": "Deduplicates permanently within the project: a repeat is reported as duplicate.",
    },
}
USAGE_EVENT_SCHEMA = {"type": "object", "required": ["customer"], "properties": _EVENT_PROPERTIES}
USAGE_REQUEST_SCHEMA = {
    "oneOf": [
        USAGE_EVENT_SCHEMA,
        {"type": "array", "items": USAGE_EVENT_SCHEMA, "minItems": 1, "maxItems": 1000},
        {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {"type": "array", "items": USAGE_EVENT_SCHEMA, "minItems": 1, "maxItems": 1000}
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

    to = serializers.DateTimeField(help_text="End of the window (exclusive), ISO 8601.")
    customer = serializers.CharField(
        required=False, help_text="Only this customer: its ID (cus_…) or external_id."
    )
    meter = serializers.CharField(required=False, help_text="Meter codes, comma-separated (default: all).")
    group_by = serializers.CharField(
        required=False,
        help_text="Dimensions, comma-separated: `customer`, or event property names (`properties.` "
        "prefix optional; needed for a property called meter or customer). Results are always per meter.",
    )
    granularity = serializers.ChoiceField(
        choices=["hour", "day"], default="day", help_text="Bucket size (UTC hours or days)."
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(help_text="Start of the window (inclusive), ISO 8601.")
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
