"""Prepaid credits over the API (docs/credits.md): a customer's wallets with their grants and
ledger, granting and selling credits, voiding a grant, a wallet's low-balance threshold.

`{id}` is the customer's ID (`cus_…`) or your external_id; another project's customer or grant is
not found (404). Amounts are integer minor units, as everywhere in the API.
"""

from decimal import Decimal

import django_filters
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_site.api.fields import (
    MONEY_SCHEMA,
    CurrencyField,
    MomentField,
    MoneyField,
    RejectUnknownFieldsMixin,
)
from billing_site.api.filters import CreatedFilterSet
from billing_site.api.views import ListRetrieveViewSet
from billing_site.errors import Unprocessable
from billing_site.money import from_minor_units, is_currency, to_minor_units
from catalog.api.filters import CustomerRefFilter
from catalog.api.schemas import CUSTOMER_PARAMETER
from catalog.models import Customer
from catalog.selectors import customer_by_reference
from invoicing import credits, purchases
from invoicing.api.serializers import MAX_MINOR_UNITS
from invoicing.models import CreditEntry, CreditEntryKind, CreditGrant, CreditSource, Wallet

TAGS = ["credits"]
RECENT_ENTRIES = 20
NULLABLE_MONEY_SCHEMA = {**MONEY_SCHEMA, "type": ["object", "null"]}


def _money(amount: Decimal | None, currency: str) -> dict | None:
    return None if amount is None else {"amount": to_minor_units(amount, currency), "currency": currency}


class CreditGrantSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", help_text="The grant's ID (cgr_…).")
    customer = serializers.CharField(source="wallet.customer.public_id", help_text="The customer's ID.")
    currency = serializers.CharField(source="wallet.currency", help_text="ISO 4217 code of the wallet.")
    name = serializers.CharField(help_text="What the credits are for, as you named them (may be empty).")
    source = serializers.ChoiceField(
        choices=CreditSource.choices, help_text="granted (free) or purchased (invoiced)."
    )
    amount = MoneyField(currency="wallet.currency", help_text="The credits granted or bought.")
    balance = serializers.SerializerMethodField(
        help_text="What is left of it: the sum of its ledger entries."
    )
    priority = serializers.IntegerField(help_text="0–100: grants with a lower priority are used first.")
    expires_at = serializers.DateTimeField(
        allow_null=True, help_text="When what is left of it expires; null: never."
    )
    available = serializers.SerializerMethodField(
        help_text="Whether invoices may use it now: paid for (a purchase), not expired, not voided."
    )
    available_at = serializers.DateTimeField(
        allow_null=True, help_text="When it became usable; null: a purchase whose invoice is not paid yet."
    )
    voided = serializers.SerializerMethodField(help_text="Whether it was voided.")
    voided_at = serializers.DateTimeField(allow_null=True, help_text="When it was voided, if it was.")
    invoice = serializers.CharField(
        source="invoice.public_id",
        default=None,
        allow_null=True,
        help_text="A purchase: the invoice that sells the credits (in_…); null for a free grant.",
    )
    created_at = serializers.DateTimeField(help_text="When it was created.")

    class Meta:
        model = CreditGrant
        fields = [
            "id",
            "customer",
            "currency",
            "name",
            "source",
            "amount",
            "balance",
            "priority",
            "expires_at",
            "available",
            "available_at",
            "voided",
            "voided_at",
            "invoice",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(MONEY_SCHEMA)
    def get_balance(self, grant: CreditGrant) -> dict:
        # Selectors annotate `balance` (None: no entry yet); a grant just written is summed here.
        balance = grant.balance if hasattr(grant, "balance") else credits.grant_balance(grant)
        return _money(balance or Decimal(0), grant.wallet.currency)

    def get_available(self, grant: CreditGrant) -> bool:
        now = timezone.now()
        return (
            grant.voided_at is None
            and grant.available_at is not None
            and grant.available_at <= now
            and (grant.expires_at is None or grant.expires_at > now)
        )

    def get_voided(self, grant: CreditGrant) -> bool:
        return grant.voided_at is not None


class CreditEntrySerializer(serializers.ModelSerializer):
    grant = serializers.CharField(source="grant.public_id", help_text="The grant it moved (cgr_…).")
    kind = serializers.ChoiceField(
        choices=CreditEntryKind.choices,
        help_text="grant (+), applied (- to an invoice), released (+ the invoice was voided), "
        "expired (-), voided (-).",
    )
    amount = MoneyField(
        currency="grant.wallet.currency", help_text="Signed: positive adds to the balance, negative takes."
    )
    invoice = serializers.CharField(
        source="invoice.public_id",
        default=None,
        allow_null=True,
        help_text="The invoice the credits were applied to or released from (in_…).",
    )
    created_at = serializers.DateTimeField(help_text="When the movement was entered.")

    class Meta:
        model = CreditEntry
        fields = ["grant", "kind", "amount", "invoice", "created_at"]
        read_only_fields = fields


class WalletSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", help_text="The wallet's ID (wal_…).")
    customer = serializers.CharField(source="customer.public_id", help_text="The customer's ID.")
    currency = serializers.CharField(help_text="ISO 4217 code: a customer has one wallet per currency.")
    balance = serializers.SerializerMethodField(
        help_text="What invoices may use now: the balances of its grants that are paid for, not "
        "expired and not voided."
    )
    low_balance_threshold = serializers.SerializerMethodField(
        help_text="`credits.balance_low` is sent when a movement takes the balance below it; null: never."
    )
    grants = serializers.SerializerMethodField(
        help_text="Its grants, in the order invoices use them (priority, soonest expiry, oldest)."
    )
    entries = serializers.SerializerMethodField(
        help_text=f"Its latest {RECENT_ENTRIES} ledger entries, newest first."
    )

    class Meta:
        model = Wallet
        fields = ["id", "customer", "currency", "balance", "low_balance_threshold", "grants", "entries"]
        read_only_fields = fields

    @extend_schema_field(MONEY_SCHEMA)
    def get_balance(self, wallet: Wallet) -> dict:
        return _money(credits.wallet_balance(wallet=wallet, at=timezone.now()), wallet.currency)

    @extend_schema_field(NULLABLE_MONEY_SCHEMA)
    def get_low_balance_threshold(self, wallet: Wallet) -> dict | None:
        return _money(wallet.low_balance_threshold, wallet.currency)

    @extend_schema_field(CreditGrantSerializer(many=True))
    def get_grants(self, wallet: Wallet) -> list:
        return CreditGrantSerializer(wallet.grants.all(), many=True).data

    @extend_schema_field(CreditEntrySerializer(many=True))
    def get_entries(self, wallet: Wallet) -> list:
        return CreditEntrySerializer(
            credits.wallet_entries(wallet=wallet, limit=RECENT_ENTRIES), many=True
        ).data


class WalletListSerializer(serializers.Serializer):
    results = WalletSerializer(many=True, help_text="One wallet per currency the customer has credits in.")


class CreditCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    type = serializers.ChoiceField(
        choices=[("grant", "grant"), ("purchase", "purchase")],
        help_text="grant: free credits, usable at once. purchase: credits sold on an invoice issued "
        "at once, usable when it is paid.",
    )
    currency = CurrencyField(help_text="ISO 4217 code of the credits (the wallet's currency).")
    amount = serializers.IntegerField(
        min_value=1, max_value=MAX_MINOR_UNITS, help_text="The credits, in minor units of the currency."
    )
    price = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_MINOR_UNITS,
        help_text="A purchase: what the invoice charges, in minor units (default: `amount`). Not for a "
        "grant (422 price_not_for_grant).",
    )
    name = serializers.CharField(
        required=False, allow_blank=True, max_length=credits.MAX_NAME, help_text="What the credits are for."
    )
    priority = serializers.IntegerField(
        required=False,
        min_value=credits.MIN_PRIORITY,
        max_value=credits.MAX_PRIORITY,
        help_text=f"0–100, lower used first (default {credits.DEFAULT_PRIORITY}).",
    )
    expires_at = MomentField(
        required=False,
        allow_null=True,
        help_text="When what is left expires; omitted or null: never. In the past: 422 expires_in_past.",
    )


class WalletUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    low_balance_threshold = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=MAX_MINOR_UNITS,
        help_text="Minor units; null turns the alert off. Absent: the wallet is answered unchanged.",
    )


CURRENCY_PARAMETER = OpenApiParameter(
    "currency", str, OpenApiParameter.PATH, description="The wallet's ISO 4217 currency code (USD)."
)
GRANT_EXAMPLE = {
    "id": "cgr_8Fq2kXw1",
    "customer": "cus_4Hd9aLm2",
    "currency": "USD",
    "name": "Welcome credits",
    "source": "granted",
    "amount": {"amount": 5000, "currency": "USD"},
    "balance": {"amount": 3250, "currency": "USD"},
    "priority": 10,
    "expires_at": "2025-01-01T00:00:00Z",
    "available": True,
    "available_at": "2024-07-15T11:30:00Z",
    "voided": False,
    "voided_at": None,
    "invoice": None,
    "created_at": "2024-07-15T11:30:00Z",
}
WALLET_EXAMPLE = {
    "id": "wal_2Kd8sPq1",
    "customer": "cus_4Hd9aLm2",
    "currency": "USD",
    "balance": {"amount": 3250, "currency": "USD"},
    "low_balance_threshold": {"amount": 1000, "currency": "USD"},
    "grants": [GRANT_EXAMPLE],
    "entries": [
        {
            "grant": "cgr_8Fq2kXw1",
            "kind": "applied",
            "amount": {"amount": -1750, "currency": "USD"},
            "invoice": "in_7Jx2mQa9",
            "created_at": "2024-08-01T00:05:00Z",
        },
        {
            "grant": "cgr_8Fq2kXw1",
            "kind": "grant",
            "amount": {"amount": 5000, "currency": "USD"},
            "invoice": None,
            "created_at": "2024-07-15T11:30:00Z",
        },
    ],
}


class _CustomerRoute(APIView):
    def customer(self) -> Customer:
        customer = customer_by_reference(project=self.request.auth.project, reference=self.kwargs["id"])
        if customer is None:
            raise NotFound(f"No such customer: '{self.kwargs['id']}'.")
        return customer

    def wallets(self, customer: Customer):
        return credits.wallet_list(customer=customer)


class CustomerCreditsView(_CustomerRoute):
    """A customer's prepaid credits; granting or selling more."""

    @extend_schema(
        summary="A customer's prepaid credits",
        description="One wallet per currency: its usable balance, its low-balance threshold, its "
        "grants in the order invoices use them, and its latest ledger entries.",
        parameters=[CUSTOMER_PARAMETER],
        responses=WalletListSerializer,
        examples=[OpenApiExample("A USD wallet", value={"results": [WALLET_EXAMPLE]}, response_only=True)],
        tags=TAGS,
    )
    def get(self, request: Request, id: str) -> Response:
        wallets = self.wallets(self.customer())
        return Response({"results": WalletSerializer(wallets, many=True).data})

    @extend_schema(
        summary="Grant or sell prepaid credits",
        description="`grant`: free credits, usable at once (`credits.granted`). `purchase`: an invoice "
        "for `price` (default `amount`) is issued at once (billing_reason credit_purchase) and the "
        "credits become usable when it is paid (`credits.purchased`, then `credits.granted`). "
        "422: `price_not_for_grant`, `expires_in_past`.",
        parameters=[CUSTOMER_PARAMETER],
        request=CreditCreateSerializer,
        responses={201: CreditGrantSerializer},
        examples=[
            OpenApiExample(
                "Free credits",
                value={
                    "type": "grant",
                    "currency": "USD",
                    "amount": 5000,
                    "name": "Welcome credits",
                    "priority": 10,
                    "expires_at": "2025-01-01T00:00:00Z",
                },
                request_only=True,
            ),
            OpenApiExample(
                "A purchase at a discount",
                value={"type": "purchase", "currency": "USD", "amount": 10000, "price": 9000},
                request_only=True,
            ),
            OpenApiExample("The grant", value=GRANT_EXAMPLE, response_only=True),
        ],
        tags=TAGS,
    )
    def post(self, request: Request, id: str) -> Response:
        customer = self.customer()
        payload = CreditCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        currency = data["currency"]
        fields = {
            "customer": customer,
            "currency": currency,
            "amount": from_minor_units(data["amount"], currency),
            "name": data.get("name", ""),
            "priority": data.get("priority"),
            "expires_at": data.get("expires_at"),
            "actor": request.auth,
        }
        if data["type"] == "grant":
            if "price" in data:
                raise Unprocessable(
                    "A grant is free: give a price only for a purchase.",
                    code="price_not_for_grant",
                    param="price",
                )
            grant = credits.credits_grant(**fields)
        else:
            price = data.get("price")
            grant = purchases.credits_purchase(
                **fields, price=None if price is None else from_minor_units(price, currency)
            )
        grant = credits.credit_grant_list(project=customer.project).get(pk=grant.pk)
        return Response(CreditGrantSerializer(grant).data, status=status.HTTP_201_CREATED)


class CustomerWalletView(_CustomerRoute):
    @extend_schema(
        summary="Set a wallet's low-balance threshold",
        description="`credits.balance_low` is sent when a movement (credits applied, expired or "
        "voided) takes the wallet's usable balance from at least the threshold to below it, once per "
        "crossing. The wallet is created if the customer has none in that currency yet. An unknown "
        "currency is 404.",
        parameters=[CUSTOMER_PARAMETER, CURRENCY_PARAMETER],
        request=WalletUpdateSerializer,
        responses=WalletSerializer,
        examples=[
            OpenApiExample("Alert under $10", value={"low_balance_threshold": 1000}, request_only=True),
            OpenApiExample("The wallet", value=WALLET_EXAMPLE, response_only=True),
        ],
        tags=TAGS,
    )
    def patch(self, request: Request, id: str, currency: str) -> Response:
        customer = self.customer()
        if not is_currency(currency):
            raise NotFound(f"No such currency: '{currency}'.")
        payload = WalletUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        if "low_balance_threshold" not in payload.validated_data:  # nothing to change
            return Response(
                WalletSerializer(get_object_or_404(self.wallets(customer), currency=currency)).data
            )
        threshold = payload.validated_data["low_balance_threshold"]
        wallet = credits.wallet_threshold_set(
            customer=customer,
            currency=currency,
            low_balance_threshold=None if threshold is None else from_minor_units(threshold, currency),
            actor=request.auth,
        )
        return Response(WalletSerializer(self.wallets(customer).get(pk=wallet.pk)).data)


class CreditGrantFilter(CreatedFilterSet):
    customer = CustomerRefFilter("wallet__customer")
    currency = django_filters.CharFilter(field_name="wallet__currency", help_text="ISO 4217 code.")

    class Meta:
        model = CreditGrant
        fields = ["source"]


class CreditGrantViewSet(ListRetrieveViewSet):
    """Grants of prepaid credits, of every customer of the project."""

    serializer_class = CreditGrantSerializer
    filterset_class = CreditGrantFilter

    def get_project_queryset(self):
        return credits.credit_grant_list(project=self.project)

    @extend_schema(
        request=None,
        responses=CreditGrantSerializer,
        summary="Void a grant",
        description="What is left of it is taken back (a `voided` ledger entry) and it is never used "
        "again; what it already paid stays paid. 422 `already_voided`; 422 `purchase_unpaid` for a "
        "purchase whose invoice is not paid (void the invoice instead).",
        examples=[
            OpenApiExample(
                "Voided",
                value={
                    **GRANT_EXAMPLE,
                    "balance": {"amount": 0, "currency": "USD"},
                    "available": False,
                    "voided": True,
                    "voided_at": "2024-08-02T09:00:00Z",
                },
                response_only=True,
            )
        ],
        tags=TAGS,
    )
    @action(detail=True, methods=["post"])
    def void(self, request, id=None):
        grant = credits.credit_grant_void(grant=self.get_object(), actor=request.auth)
        return Response(CreditGrantSerializer(self.get_project_queryset().get(pk=grant.pk)).data)


def credit_grant_payload(grant: CreditGrant) -> dict:
    """A grant as the API shows it, for an event's data."""
    return CreditGrantSerializer(grant).data


def wallet_payload(wallet: Wallet) -> dict:
    return {
        "id": wallet.public_id,
        "customer": wallet.customer.public_id,
        "currency": wallet.currency,
        "balance": _money(credits.wallet_balance(wallet=wallet, at=timezone.now()), wallet.currency),
        "low_balance_threshold": _money(wallet.low_balance_threshold, wallet.currency),
    }
