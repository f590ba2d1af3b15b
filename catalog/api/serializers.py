from rest_framework import serializers

from accounts.models import InvoiceDelivery
from billing_site.api.fields import (
    CountryField,
    CurrencyField,
    DecimalStringField,
    EmailTextField,
    LocaleField,
    PublicIdRelatedField,
    RejectUnknownFieldsMixin,
    TimezoneField,
)
from billing_site.api.json_values import METADATA_SCHEMA, SchemaJSONField
from billing_site.money import decimal_string
from billing_site.validators import MAX_INVOICE_RECIPIENTS
from catalog.api.schemas import CHARGES_SCHEMA, ENTITLEMENTS_SCHEMA, price_schema
from catalog.api.taxes import TaxRateIdsField
from catalog.models import (
    MAX_INTERVAL_COUNT,
    MAX_TRIAL_DAYS,
    Contract,
    Customer,
    Interval,
    Plan,
    Product,
    TaxStatus,
)
from catalog.pricing import ChargeKind, FeeTiming, PackageRounding, PricingModel
from meters.models import code_validator


class ProductSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)

    class Meta:
        model = Product
        fields = ["id", "code", "name", "description", "created_at", "archived_at"]
        read_only_fields = ["id", "created_at", "archived_at"]
        extra_kwargs = {"code": {"validators": [code_validator]}, "description": {"max_length": 2000}}


class TierSerializer(serializers.Serializer):
    up_to = DecimalStringField(allow_null=True, help_text="Inclusive upper bound; null on the last tier.")
    unit_price = DecimalStringField(required=False, help_text="Absent on graduated_percentage tiers.")
    rate = DecimalStringField(required=False, help_text="graduated_percentage tiers: a percentage, 0 to 100.")
    flat_fee = DecimalStringField(required=False)


class PricingSerializer(serializers.Serializer):
    """The pricing of a charge or contract line, as the API shows it (decimal strings in the
    plan's currency). Requests send charges as catalog.api.schemas.CHARGE_SCHEMA describes."""

    kind = serializers.ChoiceField(choices=ChargeKind.choices, default=ChargeKind.USAGE)
    name = serializers.CharField(required=False, allow_blank=True)
    meter = serializers.CharField(
        required=False, allow_null=True, help_text="The meter's code or ID (usage charges)."
    )
    pricing_model = serializers.ChoiceField(choices=PricingModel.choices, default=PricingModel.PER_UNIT)
    unit_price = DecimalStringField(required=False, help_text="Per unit, per package, or the fixed fee.")
    package_size = DecimalStringField(required=False, allow_null=True)
    package_rounding = serializers.ChoiceField(choices=PackageRounding.choices, required=False)
    percentage_rate = DecimalStringField(required=False, allow_null=True, help_text="0 to 100.")
    fixed_fee_per_event = DecimalStringField(required=False, allow_null=True)
    min_fee_per_event = DecimalStringField(required=False, allow_null=True)
    max_fee_per_event = DecimalStringField(required=False, allow_null=True)
    free_units = DecimalStringField(required=False)
    minimum_amount = DecimalStringField(required=False)
    tiers = TierSerializer(many=True, required=False)
    timing = serializers.ChoiceField(choices=FeeTiming.choices, required=False, help_text="Fixed fees only.")
    prorate = serializers.BooleanField(
        required=False, help_text="Fixed fees: prorate a partial period (false: bill it in full)."
    )
    free_amount = DecimalStringField(
        required=False, allow_null=True, help_text="percentage: the first summed value free of the rate."
    )
    amount_property = serializers.CharField(
        required=False, help_text="dynamic: the event property holding each event's amount."
    )
    overage_unit_price = DecimalStringField(
        required=False, allow_null=True, help_text="Tiered: per unit beyond a bounded last tier."
    )
    bill_flat_fee_at_zero = serializers.BooleanField(
        required=False, help_text="Tiered: bill tier 1's flat fee even with no billable usage."
    )

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["meter"] = instance.meter.code if instance.meter_id else None
        return data


class ChargeSerializer(PricingSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    tax_rates = TaxRateIdsField(
        read_only=True,
        help_text="Tax rates of this charge's lines (txr_…); empty: the plan's, customer's or project's.",
    )


class PlanSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    product = serializers.CharField(source="product.public_id", read_only=True)
    previous_version = serializers.CharField(
        source="previous_version.public_id", read_only=True, default=None, allow_null=True
    )
    superseded = serializers.SerializerMethodField(help_text="A newer version of this plan exists.")
    base_fee = DecimalStringField()
    minimum_commitment = DecimalStringField()
    tax_rates = TaxRateIdsField(
        read_only=True,
        help_text="Tax rates of the plan's lines (txr_…) unless a charge names its own; empty: the "
        "customer's or the project's defaults.",
    )
    charges = ChargeSerializer(many=True, read_only=True)

    class Meta:
        model = Plan
        fields = [
            "id",
            "product",
            "code",
            "version",
            "previous_version",
            "superseded",
            "name",
            "description",
            "currency",
            "interval",
            "interval_count",
            "trial_days",
            "bill_usage_during_trial",
            "base_fee",
            "base_fee_timing",
            "minimum_commitment",
            "tax_rates",
            "entitlements",
            "is_private",
            "charges",
            "created_at",
            "archived_at",
        ]
        read_only_fields = fields

    def get_superseded(self, plan: Plan) -> bool:
        if hasattr(plan, "superseded"):
            return plan.superseded
        return Plan.objects.filter(previous_version=plan).exists()


class PlanWriteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    product = PublicIdRelatedField(model=Product)
    code = serializers.CharField(max_length=100, validators=[code_validator])
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    currency = CurrencyField(required=False, help_text="ISO 4217; defaults to the project's.")
    interval = serializers.ChoiceField(choices=Interval.choices, required=False)
    interval_count = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INTERVAL_COUNT)
    trial_days = serializers.IntegerField(required=False, min_value=0, max_value=MAX_TRIAL_DAYS)
    bill_usage_during_trial = serializers.BooleanField(required=False)
    base_fee = SchemaJSONField(
        schema=price_schema(description="Per period, in the plan's currency."), required=False
    )
    base_fee_timing = serializers.ChoiceField(choices=FeeTiming.choices, required=False)
    minimum_commitment = SchemaJSONField(
        schema=price_schema(
            description="The least a period bills in fees and usage (prorated for a partial period); "
            "a true-up line makes up any shortfall. 0: none."
        ),
        required=False,
    )
    tax_rates = TaxRateIdsField(
        required=False,
        help_text="Tax rates (txr_…) of the plan's lines, most specific after a charge's own; they change "
        "in place, without a new plan version.",
    )
    entitlements = SchemaJSONField(schema=ENTITLEMENTS_SCHEMA, required=False)
    charges = SchemaJSONField(schema=CHARGES_SCHEMA, required=False)


class PlanUpdateSerializer(PlanWriteSerializer):
    product = None
    code = None

    def __init__(self, *args, **kwargs):
        kwargs["partial"] = True
        super().__init__(*args, **kwargs)


class AddressSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    line1 = serializers.CharField(required=False, allow_blank=True, max_length=200)
    line2 = serializers.CharField(required=False, allow_blank=True, max_length=200)
    city = serializers.CharField(required=False, allow_blank=True, max_length=200)
    state = serializers.CharField(required=False, allow_blank=True, max_length=200)
    postal_code = serializers.CharField(required=False, allow_blank=True, max_length=20)
    country = CountryField(required=False, allow_blank=True, help_text="ISO 3166 alpha-2, upper case: DE.")


class CustomerSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    external_id = serializers.CharField(
        max_length=255,
        required=False,
        help_text="Your own ID for the customer; usage events name it. Defaults to id.",
    )
    email = EmailTextField(required=False)
    billing_address = AddressSerializer(required=False)
    currency = CurrencyField(required=False, help_text="ISO 4217; defaults to the project's.")
    timezone = TimezoneField(required=False, help_text="IANA; defaults to the project's.")
    invoice_delivery = serializers.ChoiceField(
        choices=[*InvoiceDelivery.choices, ("", "The project's setting")], required=False, allow_blank=True
    )
    metadata = SchemaJSONField(schema=METADATA_SCHEMA, required=False)
    locale = LocaleField(
        required=False,
        allow_blank=True,
        help_text="CLDR locale (en_US, de_DE, …): how their invoices format money and dates; empty: "
        "the project's. One of the right shape CLDR does not know is 422 unknown_locale.",
    )
    invoice_emails = serializers.ListField(
        child=EmailTextField(allow_blank=False),
        required=False,
        max_length=MAX_INVOICE_RECIPIENTS,
        help_text="Where invoices are emailed; empty: `email`.",
    )
    invoice_cc = serializers.ListField(
        child=EmailTextField(allow_blank=False),
        required=False,
        max_length=MAX_INVOICE_RECIPIENTS,
        help_text="Copied on invoice emails.",
    )
    tax_status = serializers.ChoiceField(
        choices=TaxStatus.choices,
        required=False,
        help_text="taxable (default), exempt, or reverse_charge (the customer accounts for the tax); "
        "the invoice maths reads it (docs/coupons-and-taxes.md).",
    )
    tax_rates = TaxRateIdsField(
        required=False,
        help_text="Tax rate IDs (txr_…) that replace the project's default rates for this customer; a "
        "plan's or charge's own rates still win. An archived rate is 422 tax_rate_archived.",
    )

    class Meta:
        model = Customer
        fields = [
            "id",
            "external_id",
            "name",
            "email",
            "billing_address",
            "tax_id",
            "tax_status",
            "tax_rates",
            "currency",
            "timezone",
            "processor_customer_id",
            "invoice_delivery",
            "locale",
            "invoice_emails",
            "invoice_cc",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # Uniqueness is the database's job (the service answers 409), not a racy pre-check.
        validators = []


class BillableItemSerializer(serializers.Serializer):
    """One thing a customer's subscriptions bill: the base fee, a fixed fee or a metered charge."""

    id = serializers.SerializerMethodField(help_text="The charge's ID, or the plan's for its base fee.")
    type = serializers.SerializerMethodField()
    name = serializers.SerializerMethodField()
    meter = serializers.SerializerMethodField(help_text="The meter code usage is reported under.")
    subscription = serializers.CharField(source="subscription.public_id")
    plan = serializers.CharField(source="plan.public_id")
    currency = serializers.CharField(source="plan.currency")
    pricing = serializers.SerializerMethodField()

    def get_id(self, item) -> str:
        return item["charge"].public_id if item["charge"] else item["plan"].public_id

    def get_type(self, item) -> str:
        charge = item["charge"]
        return "base_fee" if charge is None else ("usage" if charge.kind == ChargeKind.USAGE else "fixed_fee")

    def get_name(self, item) -> str:
        charge = item["charge"]
        return f"{item['plan'].name} base fee" if charge is None else str(charge)

    def get_meter(self, item) -> str | None:
        charge = item["charge"]
        return charge.meter.code if charge and charge.meter_id else None

    def get_pricing(self, item) -> dict:
        if item["charge"] is None:
            plan = item["plan"]
            return {"unit_price": decimal_string(plan.base_fee), "timing": plan.base_fee_timing}
        return PricingSerializer(item["charge"]).data


class ContractSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    customer = serializers.CharField(
        source="customer.public_id", read_only=True, default=None, allow_null=True
    )
    plan = serializers.CharField(source="plan.public_id", read_only=True, default=None, allow_null=True)
    subscription = serializers.CharField(
        source="subscription.public_id", read_only=True, default=None, allow_null=True
    )
    lines = PricingSerializer(many=True, read_only=True)

    class Meta:
        model = Contract
        fields = [
            "id",
            "title",
            "status",
            "customer",
            "customer_name",
            "customer_email",
            "customer_external_id",
            "currency",
            "interval",
            "interval_count",
            "billing_anchor",
            "start_date",
            "payment_terms_days",
            "lines",
            "notes",
            "created_at",
            "accepted_at",
            "plan",
            "subscription",
        ]
        read_only_fields = fields
