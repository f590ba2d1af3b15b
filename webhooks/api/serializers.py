from rest_framework import serializers

from billing_site.api.fields import PublicIdRelatedField, RejectUnknownFieldsMixin
from webhooks.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint


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


class WebhookEndpointWriteSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="http(s); must resolve to a public address.")
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=100),
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


class RedeliverSerializer(serializers.Serializer):
    event = PublicIdRelatedField(model=Event, help_text="The event to send again (`msg_…`).")


class RecoverSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    since = serializers.DateTimeField(
        help_text="Recover the failed deliveries of events created at or after this time (ISO 8601; "
        "at most 14 days ago). Without an offset: UTC."
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
