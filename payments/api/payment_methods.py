"""A customer's saved payment methods (EasyBill's flow): a SetupIntent for Stripe.js, then the
`pm_…` it produced attached, listed, made the default, removed.

`{id}` is the customer's ID (`cus_…`) or your external_id; `{payment_method}` is our ID (`pmt_…`)
or Stripe's (`pm_…`). Another project's customer is not found (404).
"""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_site.api.fields import RejectUnknownFieldsMixin
from billing_site.validators import PatternValidator
from catalog.api.schemas import CUSTOMER_PARAMETER
from catalog.models import Customer
from catalog.selectors import customer_by_reference
from payments import methods, selectors
from payments.models import PaymentMethod


class _NullIfBlankField(serializers.CharField):
    """Text the method's type does not have (a card's IBAN digits, a SEPA debit's brand): null, not ""."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_null=True, **kwargs)

    def to_representation(self, value):
        return value or None


class PaymentMethodSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    customer = serializers.CharField(source="customer.public_id")
    processor_id = serializers.CharField(help_text="Stripe's ID (pm_…).")
    type = serializers.CharField(help_text="card, sepa_debit, …")
    default = serializers.BooleanField(
        source="is_default", help_text="Whether invoices are charged to this method."
    )
    brand = _NullIfBlankField(help_text="Cards: visa, mastercard, amex, …")
    last4 = _NullIfBlankField(help_text="Cards: the last four digits of the number.")
    iban_last4 = _NullIfBlankField(help_text="SEPA debits: the last four characters of the IBAN.")

    class Meta:
        model = PaymentMethod
        fields = [
            "id",
            "customer",
            "processor_id",
            "type",
            "default",
            "brand",
            "last4",
            "exp_month",
            "exp_year",
            "iban_last4",
            "created_at",
        ]
        read_only_fields = fields


class PaymentMethodAttachSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    payment_method_id = serializers.CharField(
        max_length=methods.PAYMENT_METHOD_ID_MAX_LENGTH,
        validators=[
            PatternValidator(
                methods.PAYMENT_METHOD_ID_PATTERN,
                "A Stripe payment method ID starts with pm_.",
                "invalid_payment_method_id",
            )
        ],
        help_text="The PaymentMethod Stripe.js created (pm_…), e.g. by confirming the SetupIntent.",
    )


class SetupIntentSerializer(serializers.Serializer):
    client_secret = serializers.CharField(
        help_text="The SetupIntent's secret (seti_…_secret_…) for Stripe.js."
    )
    publishable_key = serializers.CharField(help_text="The project's Stripe publishable key (pk_…).")


PAYMENT_METHOD_PARAMETER = OpenApiParameter(
    "payment_method",
    str,
    OpenApiParameter.PATH,
    description="The payment method's ID (pmt_…) or Stripe's (pm_…).",
)
CARD_EXAMPLE = {
    "id": "pmt_8Fq2kXw1",
    "customer": "cus_4Hd9aLm2",
    "processor_id": "pm_1PqRsT2eZvKYlo2C",
    "type": "card",
    "default": True,
    "brand": "visa",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2034,
    "iban_last4": None,
    "created_at": "2024-07-15T11:30:00Z",
}
SEPA_EXAMPLE = {
    **CARD_EXAMPLE,
    "id": "pmt_9Gr3lYx2",
    "processor_id": "pm_1PqSuV2eZvKYlo2D",
    "type": "sepa_debit",
    "default": False,
    "brand": None,
    "last4": None,
    "exp_month": None,
    "exp_year": None,
    "iban_last4": "3000",
}
METHOD_EXAMPLES = [
    OpenApiExample("A card", value=CARD_EXAMPLE, response_only=True),
    OpenApiExample("A SEPA debit", value=SEPA_EXAMPLE, response_only=True),
]
TAGS = ["payment-methods"]


class _CustomerRoute(APIView):
    def customer(self) -> Customer:
        customer = customer_by_reference(project=self.request.auth.project, reference=self.kwargs["id"])
        if customer is None:
            raise NotFound(f"No such customer: '{self.kwargs['id']}'.")
        return customer

    def payment_method(self) -> PaymentMethod:
        reference = self.kwargs["payment_method"]
        method = selectors.payment_method_by_reference(customer=self.customer(), reference=reference)
        if method is None:
            raise NotFound(f"No such payment method: '{reference}'.")
        return method


class PaymentMethodListView(_CustomerRoute):
    """The customer's saved payment methods; saving one."""

    @extend_schema(
        summary="List a customer's payment methods",
        description="The attached methods, the default first, then the most recent.",
        parameters=[CUSTOMER_PARAMETER],
        responses=inline_serializer("PaymentMethodList", {"results": PaymentMethodSerializer(many=True)}),
        examples=[
            OpenApiExample(
                "A card and a SEPA debit", value={"results": [CARD_EXAMPLE, SEPA_EXAMPLE]}, response_only=True
            )
        ],
        tags=TAGS,
    )
    def get(self, request: Request, id: str) -> Response:
        found = selectors.payment_method_list(customer=self.customer())
        return Response({"results": PaymentMethodSerializer(found, many=True).data})

    @extend_schema(
        summary="Save a payment method",
        description="Attaches the Stripe PaymentMethod to the customer's Stripe customer and saves it "
        "as Stripe describes it. The customer's first method becomes its default. Saving one already "
        "saved answers it unchanged. 422 with Stripe's code when Stripe refuses (`card_declined`), "
        "`unknown_payment_method` for an ID Stripe does not know, `processor_not_configured` for a "
        "project without Stripe.",
        parameters=[CUSTOMER_PARAMETER],
        request=PaymentMethodAttachSerializer,
        responses={201: PaymentMethodSerializer},
        examples=[
            OpenApiExample(
                "A card from Stripe.js", value={"payment_method_id": "pm_1PqRsT2eZvKYlo2C"}, request_only=True
            ),
            *METHOD_EXAMPLES,
        ],
        tags=TAGS,
    )
    def post(self, request: Request, id: str) -> Response:
        customer = self.customer()
        payload = PaymentMethodAttachSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        method = methods.payment_method_attach(
            customer=customer,
            payment_method_id=payload.validated_data["payment_method_id"],
            actor=request.auth,
        )
        return Response(PaymentMethodSerializer(method).data, status=status.HTTP_201_CREATED)


class SetupIntentView(_CustomerRoute):
    @extend_schema(
        summary="Start saving a payment method (SetupIntent)",
        description="Creates a Stripe SetupIntent for the customer (and the customer at Stripe, the "
        "first time), for off-session use. Hand `client_secret` and `publishable_key` to Stripe.js "
        "(`stripe.confirmSetup`), then save the `pm_…` it returns with "
        "`POST /v1/customers/{id}/payment-methods`.",
        parameters=[CUSTOMER_PARAMETER],
        request=None,
        responses=SetupIntentSerializer,
        examples=[
            OpenApiExample(
                "For Stripe.js",
                value={
                    "client_secret": "seti_1PqRsT2eZvKYlo2C_secret_QhXq1lR0aZ3fV7pT",
                    "publishable_key": "pk_live_51Hd9aLm2",
                },
                response_only=True,
            )
        ],
        tags=TAGS,
    )
    def post(self, request: Request, id: str) -> Response:
        customer = self.customer()
        secret = methods.setup_intent_create(customer=customer, actor=request.auth)
        return Response(
            SetupIntentSerializer(
                {"client_secret": secret, "publishable_key": customer.project.stripe_publishable_key}
            ).data
        )


class PaymentMethodDefaultView(_CustomerRoute):
    @extend_schema(
        summary="Make a payment method the default",
        description="Invoices are charged to the default method; the previous default stops being one. "
        "Stripe's customer default is set to match. 422 `payment_method_detached` for a removed method.",
        parameters=[CUSTOMER_PARAMETER, PAYMENT_METHOD_PARAMETER],
        request=None,
        responses=PaymentMethodSerializer,
        examples=METHOD_EXAMPLES,
        tags=TAGS,
    )
    def post(self, request: Request, id: str, payment_method: str) -> Response:
        method = methods.payment_method_set_default(payment_method=self.payment_method(), actor=request.auth)
        return Response(PaymentMethodSerializer(method).data)


class PaymentMethodView(_CustomerRoute):
    @extend_schema(
        summary="Remove a payment method",
        description="Detaches it at Stripe; it is no longer listed or charged (payments made with it "
        "keep naming it). If it was the default, the most recent other method becomes the default. "
        "Removing it again answers 204 too.",
        parameters=[CUSTOMER_PARAMETER, PAYMENT_METHOD_PARAMETER],
        responses={204: None},
        tags=TAGS,
    )
    def delete(self, request: Request, id: str, payment_method: str) -> Response:
        methods.payment_method_detach(payment_method=self.payment_method(), actor=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)
