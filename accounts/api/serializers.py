from rest_framework import serializers

from accounts.models import ALL_SCOPES, ApiKey, ApiKeyStatus
from accounts.services import MAX_ROLL_EXPIRY
from billing_site.api.fields import RejectUnknownFieldsMixin


class ApiKeySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    status = serializers.ChoiceField(
        choices=ApiKeyStatus.choices,
        read_only=True,
        help_text="`expiring`: rolled, still accepted until `expires_at`; `expired`: refused since then.",
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ALL_SCOPES),
        allow_empty=False,
        default=lambda: list(ALL_SCOPES),
        help_text="Default: every scope. Only scopes the calling key holds can be granted (else 422).",
    )


class ApiKeyRollSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    expires_in = serializers.IntegerField(
        min_value=0,
        max_value=int(MAX_ROLL_EXPIRY.total_seconds()),
        default=0,
        help_text="Seconds the old key keeps working beside the new one (at most 7 days). "
        "0, the default, ends it now.",
    )


class ApiKeyWithSecretSerializer(ApiKeySerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown only in this response. Store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields
