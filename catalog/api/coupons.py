"""`/v1/coupons` and a customer's coupons (`/v1/customers/{id}/coupons`): discounts and where they
are redeemed. What they take off an invoice is the invoice maths' (docs/coupons-and-taxes.md)."""

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_site.api.fields import (
    DecimalStringField,
    MomentField,
    PublicIdRelatedField,
    RejectUnknownFieldsMixin,
)
from billing_site.api.filters import ArchivedFilterSet
from billing_site.api.json_values import SchemaJSONField, decimal_schema
from billing_site.api.views import ServiceViewSet
from billing_site.money import currencies
from catalog import coupons
from catalog.api.schemas import CUSTOMER_PARAMETER
from catalog.coupons import AMOUNT_INTEGER_DIGITS, AMOUNT_PLACES, MAX_DURATION_PERIODS
from catalog.models import Coupon, CouponDuration, CouponKind, CouponRedemption, Customer
from catalog.pricing import PERCENTAGE_PLACES
from catalog.selectors import customer_by_reference
from meters.models import code_validator
from subscriptions.models import Subscription

MAX_LIMITS = 100

PERCENT_OFF_SCHEMA = decimal_schema(
    integer_digits=3,
    places=PERCENTAGE_PLACES,
    maximum=100,
    example="20",
    description="percentage coupons: above 0, at most 100 (0 is 422 percent_off_out_of_range).",
)
AMOUNT_OFF_SCHEMA = {
    "type": "object",
    "description": "fixed_amount coupons: the amount off per currency (ISO 4217 code → a positive "
    "amount with at most the currency's decimals, else 422). A customer whose currency is not listed "
    "cannot redeem it.",
    "propertyNames": {
        "enum": sorted(currencies()),
        "x-error-code": "invalid_currency",
        "x-error-message": "Keys are ISO 4217 currency codes in use, upper case (e.g. USD, EUR, JPY).",
    },
    "additionalProperties": decimal_schema(
        integer_digits=AMOUNT_INTEGER_DIGITS, places=AMOUNT_PLACES, example="10.00"
    ),
    "maxProperties": 200,
    "example": {"USD": "10.00", "EUR": "9.00"},
}


class _Ids(serializers.ListField):
    """Related objects by ID, as a list; resolved and checked by the service."""

    def __init__(self, *, source_name: str, **kwargs) -> None:
        self.source_name = source_name
        kwargs.setdefault("child", serializers.CharField(min_length=1, max_length=40))
        kwargs.setdefault("max_length", MAX_LIMITS)
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return [obj.public_id for obj in getattr(instance, self.source_name).all()]


class CouponSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True, help_text="The coupon's ID (cpn_…).")
    code = serializers.CharField(help_text="What customers type; unique in the project.")
    name = serializers.CharField(help_text="Shown on the discount line.")
    kind = serializers.ChoiceField(choices=CouponKind.choices, help_text="percentage or fixed_amount.")
    percent_off = DecimalStringField(help_text="percentage coupons: 0 to 100; else null.")
    amount_off = serializers.DictField(
        child=serializers.CharField(),
        help_text='fixed_amount coupons: decimal strings by currency, e.g. {"USD": "10.00"}; else {}.',
    )
    duration = serializers.ChoiceField(
        choices=CouponDuration.choices, help_text="once, repeating (duration_periods invoices) or forever."
    )
    duration_periods = serializers.IntegerField(allow_null=True, help_text="repeating: how many periods.")
    plans = _Ids(source_name="plans", help_text="Plan IDs it is limited to; empty: every plan.")
    charges = _Ids(source_name="charges", help_text="Charge IDs it is limited to; empty: every charge.")
    max_redemptions = serializers.IntegerField(
        allow_null=True, help_text="How many times it may be redeemed in all; null: no limit."
    )
    times_redeemed = serializers.SerializerMethodField(
        help_text="Redemptions made, removed ones included (what max_redemptions counts)."
    )
    redeem_by = serializers.DateTimeField(allow_null=True, help_text="Redeemable until; null: no end.")
    created_at = serializers.DateTimeField(help_text="When the coupon was created.")
    archived_at = serializers.DateTimeField(
        allow_null=True, help_text="When it was archived: no new redemptions; existing ones still apply."
    )

    class Meta:
        model = Coupon
        fields = [
            "id",
            "code",
            "name",
            "kind",
            "percent_off",
            "amount_off",
            "duration",
            "duration_periods",
            "plans",
            "charges",
            "max_redemptions",
            "times_redeemed",
            "redeem_by",
            "created_at",
            "archived_at",
        ]
        read_only_fields = fields

    def get_times_redeemed(self, coupon: Coupon) -> int:
        if hasattr(coupon, "times_redeemed"):
            return coupon.times_redeemed
        return coupon.redemptions.count()


class CouponUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="Shown on the discount line.")
    max_redemptions = serializers.IntegerField(
        min_value=1,
        max_value=2**31 - 1,
        allow_null=True,
        required=False,
        help_text="How many times it may be redeemed in all (not below times_redeemed: 422); null: no limit.",
    )
    redeem_by = MomentField(
        allow_null=True, required=False, help_text="Redeemable until (in the future, else 422); null: no end."
    )


class CouponCreateSerializer(CouponUpdateSerializer):
    code = serializers.CharField(
        max_length=100, validators=[code_validator], help_text="What customers type; unique in the project."
    )
    kind = serializers.ChoiceField(choices=CouponKind.choices, help_text="percentage or fixed_amount.")
    percent_off = SchemaJSONField(schema=PERCENT_OFF_SCHEMA, required=False)
    amount_off = SchemaJSONField(schema=AMOUNT_OFF_SCHEMA, required=False)
    duration = serializers.ChoiceField(
        choices=CouponDuration.choices,
        required=False,
        help_text="once (default: the first invoice), repeating (duration_periods invoices) or forever.",
    )
    duration_periods = serializers.IntegerField(
        min_value=1,
        max_value=MAX_DURATION_PERIODS,
        required=False,
        allow_null=True,
        help_text="repeating only (else 422): how many invoices it discounts.",
    )
    plans = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=40),
        max_length=MAX_LIMITS,
        required=False,
        help_text="Plan IDs (plan_…) it is limited to; empty: every plan.",
    )
    charges = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=40),
        max_length=MAX_LIMITS,
        required=False,
        help_text="Charge IDs (chg_…) it is limited to; empty: every charge.",
    )


class CouponFilter(ArchivedFilterSet):
    class Meta:
        model = Coupon
        fields = ["code", "kind", "duration"]


COUPON_EXAMPLE = {
    "id": "cpn_8Fq2kXw1",
    "code": "launch20",
    "name": "Launch: 20 % off for 3 months",
    "kind": "percentage",
    "percent_off": "20",
    "amount_off": {},
    "duration": "repeating",
    "duration_periods": 3,
    "plans": [],
    "charges": [],
    "max_redemptions": 100,
    "times_redeemed": 0,
    "redeem_by": "2030-01-01T00:00:00Z",
    "created_at": "2024-07-15T11:30:00Z",
    "archived_at": None,
}


@extend_schema_view(
    create=extend_schema(
        summary="Create a coupon",
        description="A percentage (`percent_off`) or a fixed amount per currency (`amount_off`) off, for "
        "`once`, `repeating` (`duration_periods`) or `forever`. Rules between fields are 422: "
        "`percent_off_required`, `amount_off_required`, `percent_off_not_allowed`, "
        "`amount_off_not_allowed`, `percent_off_out_of_range`, `amount_not_positive`, "
        "`too_many_decimal_places`, `duration_periods_required`, `duration_periods_not_allowed`, "
        "`redeem_by_in_past`, `not_found` (a plan or charge); a code taken is 409 `coupon_code_taken`.",
        examples=[
            OpenApiExample(
                "20 % off for 3 months",
                value={
                    "code": "launch20",
                    "name": "Launch: 20 % off for 3 months",
                    "kind": "percentage",
                    "percent_off": "20",
                    "duration": "repeating",
                    "duration_periods": 3,
                    "max_redemptions": 100,
                    "redeem_by": "2030-01-01T00:00:00Z",
                },
                request_only=True,
            ),
            OpenApiExample(
                "10 USD or 9 EUR off once",
                value={
                    "code": "welcome10",
                    "name": "Welcome",
                    "kind": "fixed_amount",
                    "amount_off": {"USD": "10.00", "EUR": "9.00"},
                },
                request_only=True,
            ),
            OpenApiExample("A coupon", value=COUPON_EXAMPLE, response_only=True),
        ],
    ),
    partial_update=extend_schema(
        summary="Update a coupon",
        description="Name, `redeem_by`, `max_redemptions`; the discount and duration never change. "
        "422 `coupon_archived`, `max_redemptions_below_redeemed`, `redeem_by_in_past`.",
        examples=[OpenApiExample("A higher limit", value={"max_redemptions": 500}, request_only=True)],
    ),
)
class CouponViewSet(ServiceViewSet):
    """Coupons (`cpn_…`). Lists show the coupons in use; `?archived=true` the archived ones."""

    http_method_names = ["get", "post", "patch", "head", "options"]
    serializer_class = CouponSerializer
    create_serializer_class = CouponCreateSerializer
    update_serializer_class = CouponUpdateSerializer
    filterset_class = CouponFilter

    def get_project_queryset(self):
        return coupons.coupon_list(project=self.project)

    def create_object(self, data):
        return coupons.coupon_create(project=self.project, actor=self.request.auth, **data)

    def update_object(self, coupon, changes):
        return coupons.coupon_update(coupon=coupon, changes=changes, actor=self.request.auth)

    @extend_schema(
        request=None,
        summary="Archive a coupon",
        description="No new redemptions from now on; redemptions already made keep applying until "
        "removed. Archiving it again answers the coupon unchanged.",
    )
    @action(detail=True, methods=["post"])
    def archive(self, request, id=None):
        coupon = coupons.coupon_archive(coupon=self.get_object(), actor=request.auth)
        return Response(self.get_serializer(coupon).data)


# --- a customer's coupons -------------------------------------------------------------------------


class CouponRedemptionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", help_text="The redemption's ID (cpr_…).")
    coupon = CouponSerializer(help_text="The coupon redeemed.")
    customer = serializers.CharField(source="customer.public_id", help_text="The customer's ID.")
    subscription = serializers.CharField(
        source="subscription.public_id",
        default=None,
        allow_null=True,
        help_text="The subscription it applies to; null: every subscription of the customer.",
    )
    created_at = serializers.DateTimeField(help_text="When it was redeemed.")
    removed_at = serializers.DateTimeField(allow_null=True, help_text="When it was removed; null: in force.")

    class Meta:
        model = CouponRedemption
        fields = ["id", "coupon", "customer", "subscription", "created_at", "removed_at"]
        read_only_fields = fields


class CouponReferenceField(PublicIdRelatedField):
    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", "The coupon's code or ID (cpn_…).")
        super().__init__(model=Coupon, **kwargs)

    def find(self, reference: str) -> Coupon | None:
        return coupons.coupon_by_reference(project=self.context["request"].auth.project, reference=reference)


class CouponRedeemSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    coupon = CouponReferenceField()
    subscription = PublicIdRelatedField(
        model=Subscription,
        required=False,
        allow_null=True,
        help_text="One of the customer's subscriptions (sub_…); absent or null: all of them.",
    )


REDEMPTION_PARAMETER = OpenApiParameter(
    "redemption", str, OpenApiParameter.PATH, description="The redemption's ID (cpr_…)."
)
REDEMPTION_EXAMPLE = {
    "id": "cpr_3Ka9pQz7",
    "coupon": {**COUPON_EXAMPLE, "times_redeemed": 1},
    "customer": "cus_4Hd9aLm2",
    "subscription": None,
    "created_at": "2024-07-16T09:00:00Z",
    "removed_at": None,
}
TAGS = ["customers"]


class _CustomerRoute(APIView):
    def customer(self) -> Customer:
        customer = customer_by_reference(project=self.request.auth.project, reference=self.kwargs["id"])
        if customer is None:
            raise NotFound(f"No such customer: '{self.kwargs['id']}'.")
        return customer


class CustomerCouponListView(_CustomerRoute):
    @extend_schema(
        summary="List a customer's coupons",
        description="The redemptions in force (not removed), oldest first.",
        parameters=[CUSTOMER_PARAMETER],
        responses=inline_serializer(
            "CouponRedemptionList", {"results": CouponRedemptionSerializer(many=True)}
        ),
        examples=[OpenApiExample("One coupon", value={"results": [REDEMPTION_EXAMPLE]}, response_only=True)],
        tags=TAGS,
    )
    def get(self, request: Request, id: str) -> Response:
        found = coupons.coupon_redemption_list(customer=self.customer())
        return Response({"results": CouponRedemptionSerializer(found, many=True).data})

    @extend_schema(
        summary="Apply a coupon to a customer",
        description="To all the customer's subscriptions, or to one (`subscription`). 422 "
        "`coupon_archived`, `coupon_expired` (past redeem_by), `coupon_max_redemptions_reached`, "
        "`coupon_currency_unavailable` (a fixed amount without the customer's currency), "
        "`subscription_not_of_customer`, `not_found` (coupon or subscription); 409 "
        "`coupon_already_applied` when it is already in force for that customer or subscription.",
        parameters=[CUSTOMER_PARAMETER],
        request=CouponRedeemSerializer,
        responses={201: CouponRedemptionSerializer},
        examples=[
            OpenApiExample("By code", value={"coupon": "launch20"}, request_only=True),
            OpenApiExample(
                "To one subscription",
                value={"coupon": "cpn_8Fq2kXw1", "subscription": "sub_7Jd2mNp4"},
                request_only=True,
            ),
            OpenApiExample("A redemption", value=REDEMPTION_EXAMPLE, response_only=True),
        ],
        tags=TAGS,
    )
    def post(self, request: Request, id: str) -> Response:
        customer = self.customer()
        payload = CouponRedeemSerializer(data=request.data, context={"request": request})
        payload.is_valid(raise_exception=True)
        redemption = coupons.coupon_redeem(
            customer=customer,
            coupon=payload.validated_data["coupon"],
            subscription=payload.validated_data.get("subscription"),
            actor=request.auth,
        )
        return Response(CouponRedemptionSerializer(redemption).data, status=status.HTTP_201_CREATED)


class CustomerCouponView(_CustomerRoute):
    @extend_schema(
        summary="Remove a coupon from a customer",
        description="The redemption is no longer in force (its `removed_at` is set; discount lines "
        "already on invoices stay). It still counts towards the coupon's max_redemptions. Removing it "
        "again answers 204 too.",
        parameters=[CUSTOMER_PARAMETER, REDEMPTION_PARAMETER],
        responses={204: None},
        tags=TAGS,
    )
    def delete(self, request: Request, id: str, redemption: str) -> Response:
        found = coupons.coupon_redemption_find(customer=self.customer(), public_id=redemption)
        if found is None:
            raise NotFound(f"No such coupon redemption: '{redemption}'.")
        coupons.coupon_redemption_remove(redemption=found, actor=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)
