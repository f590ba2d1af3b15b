"""`/v1/tax-rates`: the rates invoices are taxed at, and the field that names them on customers."""

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from billing_site.api.fields import DecimalStringField, RejectUnknownFieldsMixin
from billing_site.api.filters import ArchivedFilterSet, StrictBooleanFilter
from billing_site.api.json_values import SchemaJSONField, decimal_schema
from billing_site.api.views import ServiceViewSet
from catalog import taxes
from catalog.models import TaxRate
from catalog.pricing import PERCENTAGE_PLACES

MAX_TAX_RATES = 20

PERCENTAGE_SCHEMA = decimal_schema(
    integer_digits=3,
    places=PERCENTAGE_PLACES,
    maximum=100,
    example="20",
    description="0 to 100, up to 6 decimals (a decimal string above 100 is 422 percentage_out_of_range).",
)


class TaxRateIdsField(serializers.ListField):
    """The tax rates an object names, by ID (`txr_…`); written as a list of IDs, resolved and checked
    by the service (catalog.taxes.tax_rates_resolve)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("child", serializers.CharField(min_length=1, max_length=40))
        kwargs.setdefault("max_length", MAX_TAX_RATES)
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return [rate.public_id for rate in instance.tax_rates.all()]


class TaxRateSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True, help_text="The rate's ID (txr_…).")
    name = serializers.CharField(help_text='Shown on invoices, e.g. "VAT" or "Sales tax".')
    percentage = DecimalStringField(help_text="0 to 100, as a decimal string.")
    inclusive = serializers.BooleanField(help_text="Prices already include this tax (else it is added).")
    jurisdiction = serializers.CharField(help_text='Where the tax applies, e.g. "FR", "US-CA".')
    is_default = serializers.BooleanField(
        help_text="Applies to every invoice of the project unless a more specific rate is set."
    )
    created_at = serializers.DateTimeField(help_text="When the rate was created.")
    archived_at = serializers.DateTimeField(
        allow_null=True, help_text="When the rate was archived; archived rates are set nowhere new."
    )

    class Meta:
        model = TaxRate
        fields = [
            "id",
            "name",
            "percentage",
            "inclusive",
            "jurisdiction",
            "is_default",
            "created_at",
            "archived_at",
        ]
        read_only_fields = fields


class TaxRateUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text='Shown on invoices, e.g. "VAT" or "Sales tax".')
    jurisdiction = serializers.CharField(
        max_length=100, allow_blank=True, required=False, help_text='e.g. "FR", "US-CA".'
    )
    is_default = serializers.BooleanField(
        required=False,
        help_text="Applies to every invoice of the project unless a more specific rate is set.",
    )


class TaxRateCreateSerializer(TaxRateUpdateSerializer):
    percentage = SchemaJSONField(schema=PERCENTAGE_SCHEMA, help_text="0 to 100, up to 6 decimals.")
    inclusive = serializers.BooleanField(
        required=False, help_text="Prices already include this tax (default false). Fixed once created."
    )


class TaxRateFilter(ArchivedFilterSet):
    is_default = StrictBooleanFilter(help_text="true: only the project's default rates.")

    class Meta:
        model = TaxRate
        fields = ["jurisdiction", "inclusive"]


RATE_EXAMPLE = {
    "id": "txr_8Fq2kXw1",
    "name": "VAT",
    "percentage": "20",
    "inclusive": False,
    "jurisdiction": "FR",
    "is_default": True,
    "created_at": "2024-07-15T11:30:00Z",
    "archived_at": None,
}


@extend_schema_view(
    create=extend_schema(
        summary="Create a tax rate",
        description="`percentage` and `inclusive` are fixed once created: to change them, archive the "
        "rate and create another.",
        examples=[
            OpenApiExample(
                "French VAT, the project's default",
                value={"name": "VAT", "percentage": "20", "jurisdiction": "FR", "is_default": True},
                request_only=True,
            ),
            OpenApiExample("A tax rate", value=RATE_EXAMPLE, response_only=True),
        ],
    ),
    partial_update=extend_schema(
        summary="Update a tax rate",
        description="Name, jurisdiction and whether it is a default; an archived rate is 422 "
        "`tax_rate_archived`.",
        examples=[OpenApiExample("Rename", value={"name": "TVA"}, request_only=True)],
    ),
)
class TaxRateViewSet(ServiceViewSet):
    """Tax rates (`txr_…`). Lists show the rates in use; `?archived=true` the archived ones."""

    http_method_names = ["get", "post", "patch", "head", "options"]
    serializer_class = TaxRateSerializer
    create_serializer_class = TaxRateCreateSerializer
    update_serializer_class = TaxRateUpdateSerializer
    filterset_class = TaxRateFilter

    def get_project_queryset(self):
        return taxes.tax_rate_list(project=self.project)

    def create_object(self, data):
        return taxes.tax_rate_create(project=self.project, actor=self.request.auth, **data)

    def update_object(self, tax_rate, changes):
        return taxes.tax_rate_update(tax_rate=tax_rate, changes=changes, actor=self.request.auth)

    @extend_schema(
        request=None,
        summary="Archive a tax rate",
        description="It is set nowhere new (nor applied as a default) from now on; where it is set, it "
        "stays. Archiving it again answers the rate unchanged.",
    )
    @action(detail=True, methods=["post"])
    def archive(self, request, id=None):
        rate = taxes.tax_rate_archive(tax_rate=self.get_object(), actor=request.auth)
        return Response(self.get_serializer(rate).data)
