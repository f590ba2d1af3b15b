from rest_framework import serializers

from accounts.models import ALL_SCOPES, ApiKey
from billing_site.api.fields import RejectUnknownFieldsMixin


class ApiKeySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "scopes", "status", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields

    def get_status(self, api_key: ApiKey) -> str:
        return "active" if api_key.is_active else "revoked"


class ApiKeyCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ALL_SCOPES),
        allow_empty=False,
        default=lambda: list(ALL_SCOPES),
        help_text="Default: every scope. Only scopes the calling key holds can be granted (else 422).",
    )


class ApiKeyWithSecretSerializer(ApiKeySerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown only in this response. Store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields
