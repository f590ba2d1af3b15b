from itertools import pairwise

from rest_framework import serializers

from accounts.models import ALL_SCOPES, ApiKey, ApiKeyStatus, Project
from accounts.services import MAX_ROLL_EXPIRY
from billing_site.api.fields import (
    CurrencyField,
    EmailTextField,
    LocaleField,
    RejectUnknownFieldsMixin,
    TimezoneField,
)
from billing_site.errors import Unprocessable


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


class ProjectSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    """The calling key's project. PATCH changes the fields it names; the rest are read-only."""

    id = serializers.CharField(source="public_id", read_only=True)
    currency = CurrencyField(
        required=False, help_text="ISO 4217: the default of customers and plans created from now on."
    )
    timezone = TimezoneField(required=False, help_text="IANA: the default of customers created from now on.")
    sender_email = EmailTextField(required=False, help_text="From-address of invoice emails; empty: none.")
    reply_to_email = EmailTextField(required=False)
    footer_text = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    company_address = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    payment_instructions = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    locale = LocaleField(
        required=False,
        help_text="CLDR locale (en_US, de_DE, …): how invoices format money and dates, unless the "
        "customer has one. One of the right shape CLDR does not know is 422 unknown_locale.",
    )
    payout_delay_hours = serializers.IntegerField(
        min_value=0,
        max_value=24 * 90,
        required=False,
        help_text="Hours a payment stays pending before it is available for payout (for Stripe, "
        "Stripe's own available-on date if later). Default 48.",
    )
    payment_retry_days = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=90),
        max_length=10,
        required=False,
        help_text="Dunning: retry a failed charge this many days after the first failure, each day "
        "later than the one before (else 422 invalid_retry_days). Default [1, 3, 5, 7]; [] for no retries.",
    )
    stripe_secret_key_set = serializers.SerializerMethodField(
        help_text="Whether a Stripe secret key is configured (the key itself is never shown)."
    )
    stripe_webhook_secret_set = serializers.SerializerMethodField(
        help_text="Whether a Stripe webhook signing secret is configured (never shown)."
    )

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "sandbox",
            "currency",
            "timezone",
            "invoice_delivery",
            "grace_period_hours",
            "payment_terms_days",
            "invoice_number_prefix",
            "unmatched_usage",
            "require_usage_idempotency_key",
            "sender_name",
            "sender_email",
            "reply_to_email",
            "accent_color",
            "footer_text",
            "company_name",
            "company_address",
            "company_tax_id",
            "payment_instructions",
            "locale",
            "email_invoices",
            "payment_processor",
            "payout_delay_hours",
            "payment_retry_days",
            "dunning_final_action",
            "stripe_secret_key_set",
            "stripe_webhook_secret_set",
            "api_rate_limit_per_minute",
            "ingest_rate_limit_per_minute",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "sandbox",
            "payment_processor",
            "api_rate_limit_per_minute",
            "ingest_rate_limit_per_minute",
            "created_at",
        ]

    def validate_payment_retry_days(self, days: list[int]) -> list[int]:
        # A rule between the list's items, which the schema cannot state: 422 (docs/api.md).
        if any(later <= earlier for earlier, later in pairwise(days)):
            raise Unprocessable(
                "Each retry day must be later than the one before, e.g. [1, 3, 5, 7].",
                code="invalid_retry_days",
                param="payment_retry_days",
            )
        return days

    def get_stripe_secret_key_set(self, project: Project) -> bool:
        return bool(project.stripe_secret_key)

    def get_stripe_webhook_secret_set(self, project: Project) -> bool:
        return bool(project.stripe_webhook_secret)
