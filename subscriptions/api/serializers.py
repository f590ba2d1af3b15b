from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import MAX_PAYMENT_TERMS_DAYS
from billing_site.api.fields import (
    MOMENT_SCHEMA,
    MomentField,
    RejectUnknownFieldsMixin,
    moment_or_error,
)
from billing_site.api.json_values import METADATA_SCHEMA, SchemaJSONField
from billing_site.errors import Unprocessable
from catalog.api.fields import CustomerRefField, PlanRefField
from catalog.api.schemas import CHARGES_SCHEMA, price_schema
from catalog.models import MAX_TRIAL_DAYS, BillingAnchor
from subscriptions.models import Status, Subscription
from subscriptions.services import (
    CHANGE_AT_PERIOD_END,
    CHANGE_NOW,
    PAST_CATCH_UP,
    PAST_NONE,
    PRORATE,
    PRORATE_ALWAYS_INVOICE,
    PRORATE_NONE,
)


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
    catch_up_period = serializers.SerializerMethodField()
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
            "billed_from",
            "catch_up_period",
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

    @extend_schema_field(PeriodSerializer(allow_null=True))
    def get_catch_up_period(self, subscription: Subscription) -> dict | None:
        """The time before the period the subscription was created in, billed on its opening
        (catch-up) invoice; null when it started in that period or the past was not billed."""
        if subscription.catch_up_until is None:
            return None
        return {"start": subscription.billed_from, "end": subscription.catch_up_until}

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
    field_aliases = {"customer_id": "customer", "plan_id": "plan"}

    customer = CustomerRefField()
    plan = PlanRefField()
    starts_at = MomentField(required=False, help_text="Default now; may be in the future.")
    ends_at = MomentField(required=False, allow_null=True)
    trial_days = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_TRIAL_DAYS, help_text="Default: the plan's."
    )
    billing_anchor = serializers.ChoiceField(choices=BillingAnchor.choices, required=False)
    bill_past_periods = serializers.ChoiceField(
        choices=[PAST_CATCH_UP, PAST_NONE],
        required=False,
        help_text="For a starts_at in the past: catch_up (default) bills the periods already ended "
        "on one catch-up invoice, issued now (see catch_up_period in the answer); none bills "
        "nothing before now.",
    )
    external_reference = serializers.CharField(required=False, allow_blank=True, max_length=255)
    payment_terms_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_PAYMENT_TERMS_DAYS
    )
    metadata = SchemaJSONField(schema=METADATA_SCHEMA, required=False)


@extend_schema_field(
    {"anyOf": [{"type": "string", "enum": [CHANGE_NOW, CHANGE_AT_PERIOD_END]}, MOMENT_SCHEMA]}
)
class EffectiveAtField(serializers.Field):
    """`now`, `period_end`, or a moment (billing_site.moments), as a plan change's time."""

    def to_internal_value(self, data):
        if data in (CHANGE_NOW, CHANGE_AT_PERIOD_END):
            return data
        return moment_or_error(data, param=self.field_name)


class SubscriptionUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """One change per request (status, plan, price overrides or cancel_at_period_end), plus terms."""

    # `change_at` is this API's first name for effective_at (it took now and period_end).
    field_aliases = {"change_at": "effective_at"}

    status = serializers.ChoiceField(
        choices=[Status.PAUSED, Status.ACTIVE, Status.CANCELED],
        required=False,
        help_text="paused: pause now. active: resume. canceled: cancel (now, or with cancel_at_period_end).",
    )
    cancel_at_period_end = serializers.BooleanField(
        required=False,
        help_text="With status=canceled: cancel at the end of the current period. Alone, false: undo that.",
    )
    plan = PlanRefField(required=False)
    effective_at = EffectiveAtField(
        required=False,
        help_text="When a plan change applies. now (default); period_end: when the current period "
        "ends; or a date-time in the current period, not in the future (a change backdated to it).",
    )
    proration_behavior = serializers.ChoiceField(
        choices=[PRORATE, PRORATE_NONE, PRORATE_ALWAYS_INVOICE],
        required=False,
        help_text="Stripe's names. create_prorations (default): fixed fees prorated by time between "
        "the plans, settled on the next invoice. always_invoice: the same, invoiced at once. "
        "none: the old plan's fees to the end of the period.",
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
        for name in ("effective_at", "proration_behavior"):
            if name in attrs and "plan" not in attrs:
                raise Unprocessable(f"{name} goes with plan.", code="plan_required", param=name)
        if attrs.get("cancel_at_period_end") and attrs.get("status") not in (None, Status.CANCELED):
            raise Unprocessable(
                "cancel_at_period_end goes with status=canceled.",
                code="cancel_at_period_end_without_cancel",
                param="cancel_at_period_end",
            )
        return attrs
