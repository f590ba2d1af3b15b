from rest_framework import serializers

from billing_site.api.fields import MomentField, PublicIdRelatedField, RejectUnknownFieldsMixin
from billing_site.validators import PatternValidator
from webhooks.models import Delivery, DeliveryAttempt, DisabledReason, Event, WebhookEndpoint
from webhooks.services import EVENT_TYPE_PATTERN, MAX_EVENT_TYPES, MAX_URL_LENGTH


class EventSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    object = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = ["id", "type", "created_at", "object", "data"]
        read_only_fields = fields

    def get_object(self, event: Event) -> dict | None:
        if not event.object_id:
            return None
        return {"type": event.object_type, "id": event.object_id}


class WebhookEndpointSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    disabled_reason = serializers.ChoiceField(
        choices=DisabledReason.choices, allow_blank=True, read_only=True, help_text="Empty while enabled."
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The signing secret (`whsec_…`), in this response only. Store it now."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointWriteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    url = serializers.CharField(
        max_length=MAX_URL_LENGTH,
        help_text="http(s), resolving to a public address (else 422) unless the project allows private URLs.",
    )
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.CharField(
            max_length=100,
            validators=[PatternValidator(EVENT_TYPE_PATTERN.pattern, code="invalid_event_type")],
        ),
        max_length=MAX_EVENT_TYPES,
        required=False,
        help_text="Types to send (`invoice.paid`) or families (`invoice.*`); empty or absent: all.",
    )
    enabled = serializers.BooleanField(required=False)


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "started_at",
            "duration_ms",
            "url",
            "status_code",
            "succeeded",
            "early",
            "response_body",
            "error",
        ]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    endpoint = serializers.CharField(source="endpoint.public_id", read_only=True)
    event = serializers.CharField(
        source="event.public_id", read_only=True, help_text="Also the `webhook-id` of every attempt."
    )
    event_type = serializers.CharField(source="event.type", read_only=True)
    attempts = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "endpoint",
            "event",
            "event_type",
            "is_redelivery",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "succeeded_at",
            "created_at",
            "attempts",
        ]
        read_only_fields = fields


class RedeliverSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    event = PublicIdRelatedField(model=Event, help_text="The event to send again (`msg_…`).")


class RecoverSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    since = MomentField(
        help_text="Recover the failed deliveries of events created at or after this time (ISO 8601; "
        "at most 14 days ago, else 422). Without an offset: UTC."
    )


class RecoverySerializer(serializers.Serializer):
    queued = serializers.IntegerField(
        help_text="Events queued for delivery again, each as a new delivery (a redelivery), in the "
        "order they happened."
    )
    has_more = serializers.BooleanField(
        help_text="The limit of 10,000 events per call was reached: call again with the same `since` "
        "for the rest (what was queued is not queued again)."
    )
