from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import MAX_PAYMENT_TERMS_DAYS
from billing_site.api.fields import MomentField, PublicIdRelatedField, RejectUnknownFieldsMixin
from billing_site.api.json_values import METADATA_SCHEMA, SchemaJSONField
from billing_site.errors import Unprocessable
from catalog.api.schemas import CHARGES_SCHEMA, price_schema
from catalog.models import MAX_TRIAL_DAYS, BillingAnchor, Customer, Plan
from subscriptions.models import Status, Subscription
from subscriptions.services import CHANGE_AT_PERIOD_END, CHANGE_NOW


class PhaseSerializer(serializers.Serializer):
    plan = serializers.CharField(source="plan.public_id")
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField(allow_null=True)
    paused = serializers.BooleanField()


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class PendingChangeSerializer(serializers.Serializer):
    plan = serializers.CharField()
    effective_at = serializers.DateTimeField()


class SubscriptionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    customer = serializers.CharField(source="customer.public_id")
    plan = serializers.CharField(source="plan.public_id")
    status = serializers.ChoiceField(choices=Status.choices)
    current_period = serializers.SerializerMethodField()
    pending_plan_change = serializers.SerializerMethodField()
    phases = PhaseSerializer(many=True)

    class Meta:
        model = Subscription
        fields = [
            "id",
            "customer",
            "plan",
            "status",
            "starts_at",
            "ends_at",
            "trial_ends_at",
            "billing_anchor",
            "timezone",
            "current_period",
            "canceled_at",
            "cancel_at_period_end",
            "paused_at",
            "pending_plan_change",
            "external_reference",
            "payment_terms_days",
            "metadata",
            "phases",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(PeriodSerializer)
    def get_current_period(self, subscription: Subscription) -> dict:
        return {"start": subscription.current_period_start, "end": subscription.current_period_end}

    @extend_schema_field(PendingChangeSerializer(allow_null=True))
    def get_pending_plan_change(self, subscription: Subscription) -> dict | None:
        now = timezone.now()
        future = [
            p for p in subscription.phases.all() if p.starts_at > now and p.plan_id != subscription.plan_id
        ]
        if not future or subscription.starts_at > now:
            return None
        return {"plan": future[0].plan.public_id, "effective_at": future[0].starts_at}


PRICE_OVERRIDES_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "base_fee": price_schema(description="The base fee per period."),
        "charges": {
            **CHARGES_SCHEMA,
            "description": "Charges replacing the plan's charge for the same meter.",
        },
    },
}


class SubscriptionCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    customer = PublicIdRelatedField(model=Customer, help_text="The customer's ID (cus_…).")
    plan = PublicIdRelatedField(model=Plan, help_text="The plan version's ID (plan_…).")
    starts_at = MomentField(required=False, help_text="Default now; may be in the future.")
    ends_at = MomentField(required=False, allow_null=True)
    trial_days = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_TRIAL_DAYS, help_text="Default: the plan's."
    )
    billing_anchor = serializers.ChoiceField(choices=BillingAnchor.choices, required=False)
    external_reference = serializers.CharField(required=False, allow_blank=True, max_length=255)
    payment_terms_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_PAYMENT_TERMS_DAYS
    )
    metadata = SchemaJSONField(schema=METADATA_SCHEMA, required=False)


class SubscriptionUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """One change per request (status, plan, price overrides or cancel_at_period_end), plus terms."""

    status = serializers.ChoiceField(
        choices=[Status.PAUSED, Status.ACTIVE, Status.CANCELED],
        required=False,
        help_text="paused: pause now. active: resume. canceled: cancel (now, or with cancel_at_period_end).",
    )
    cancel_at_period_end = serializers.BooleanField(
        required=False,
        help_text="With status=canceled: cancel at the end of the current period. Alone, false: undo that.",
    )
    plan = PublicIdRelatedField(model=Plan, required=False, help_text="Move to this plan version.")
    change_at = serializers.ChoiceField(
        choices=[CHANGE_NOW, CHANGE_AT_PERIOD_END],
        default=CHANGE_NOW,
        help_text="now: prorate the base fee by time. period_end: switch when the current period ends.",
    )
    price_overrides = SchemaJSONField(
        schema=PRICE_OVERRIDES_SCHEMA,
        required=False,
        help_text='Own prices for this subscription: {"base_fee": "40", "charges": [{"meter": …}]}.',
    )
    ends_at = MomentField(required=False, allow_null=True)
    external_reference = serializers.CharField(required=False, allow_blank=True, max_length=255)
    payment_terms_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_PAYMENT_TERMS_DAYS
    )
    metadata = SchemaJSONField(schema=METADATA_SCHEMA, required=False)

    def validate(self, attrs):
        # Rules between fields, which the schema cannot state: 422, not 400.
        changes = [name for name in ("status", "plan", "price_overrides") if name in attrs]
        if "cancel_at_period_end" in attrs and "status" not in attrs:
            changes.append("cancel_at_period_end")
        if len(changes) > 1:
            raise Unprocessable(
                f"One change per request: {', '.join(changes)} given.", code="one_change_per_request"
            )
        if attrs.get("cancel_at_period_end") and attrs.get("status") not in (None, Status.CANCELED):
            raise Unprocessable(
                "cancel_at_period_end goes with status=canceled.",
                code="cancel_at_period_end_without_cancel",
                param="cancel_at_period_end",
            )
        return attrs
