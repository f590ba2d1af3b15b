import django_filters
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_site.api.filters import CreatedFilterSet, StrictBooleanFilter
from billing_site.api.views import ListRetrieveViewSet
from billing_site.money import from_minor_units, to_minor_units
from catalog.api.filters import CustomerRefFilter
from invoicing import selectors as invoicing_selectors
from payments import selectors, services
from payments.api.serializers import (
    BalanceSerializer,
    CreditNoteRefundSerializer,
    PaymentRecordSerializer,
    PaymentSerializer,
    PayoutSerializer,
    RefundSerializer,
)
from payments.models import Payment, PaymentStatus, Payout, PayoutStatus


class PaymentFilter(CreatedFilterSet):
    invoice = django_filters.CharFilter(field_name="invoice__public_id", help_text="An invoice ID (in_…).")
    customer = CustomerRefFilter()
    status = django_filters.MultipleChoiceFilter(choices=PaymentStatus.choices)
    unmatched = StrictBooleanFilter(
        field_name="invoice", lookup_expr="isnull", help_text="true: only payments that match no invoice."
    )

    class Meta:
        model = Payment
        fields = ["processor"]


class PaymentViewSet(ListRetrieveViewSet):
    """Payments: charges through Stripe (one per attempt) and payments recorded for your own
    processor. `?unmatched=true` lists what the processor reported that matches no invoice."""

    serializer_class = PaymentSerializer
    filterset_class = PaymentFilter

    def get_project_queryset(self):
        return selectors.payment_list(project=self.project)


class PayoutFilter(CreatedFilterSet):
    status = django_filters.MultipleChoiceFilter(choices=PayoutStatus.choices)

    class Meta:
        model = Payout
        fields = ["currency"]


class PayoutViewSet(ListRetrieveViewSet):
    """Payouts of the available balance (`settle_balance`, every 15 minutes)."""

    serializer_class = PayoutSerializer
    filterset_class = PayoutFilter

    def get_project_queryset(self):
        return selectors.payout_list(project=self.project)


class BalanceView(APIView):
    @extend_schema(
        responses=BalanceSerializer,
        summary="The project's balance",
        description="What was collected and not yet paid out, in minor units: `pending` until the "
        "payout delay (`payout`, 48 h by default; for Stripe, Stripe's own date if later) has passed "
        "since the payment, then `available` until a payout takes it. The top-level amounts are in the "
        "project's currency; `balances` lists every currency.",
        examples=[
            OpenApiExample(
                "Balance",
                value={
                    "currency": "USD",
                    "available": 6200,
                    "pending": 12550,
                    "payout": "48h",
                    "balances": [{"currency": "USD", "available": 6200, "pending": 12550}],
                },
            )
        ],
    )
    def get(self, request):
        project = request.auth.project
        balances = selectors.balance_for(project=project, now=timezone.now())
        rows = [
            {
                "currency": currency,
                "available": to_minor_units(amounts["available"], currency),
                "pending": to_minor_units(amounts["pending"], currency),
            }
            for currency, amounts in balances.items()
        ]
        own = next((row for row in rows if row["currency"] == project.currency), None)
        own = own or {"currency": project.currency, "available": 0, "pending": 0}
        return Response({**own, "payout": f"{project.payout_delay_hours}h", "balances": rows})


def _invoice(request, id: str):
    invoice = invoicing_selectors.invoice_list(project=request.auth.project).filter(public_id=id).first()
    if invoice is None:
        raise NotFound(f"No such invoice: '{id}'.")
    return invoice


class InvoicePaymentView(APIView):
    @extend_schema(
        request=PaymentRecordSerializer,
        responses={201: PaymentSerializer},
        summary="Record a payment of an invoice",
        description="A payment made outside Billable (your own processor, a bank transfer). Payments "
        "add up; the invoice becomes `paid` when nothing is due. 422 `overpayment` for more than is "
        "due, 409 `duplicate_reference` for a reference already recorded, 422 `invalid_transition` "
        "unless the invoice is open or uncollectible.",
        examples=[
            OpenApiExample(
                "Bank transfer",
                value={"amount": 5000, "reference": "BANK-2026-11-0042", "paid_at": "2026-11-28T10:00:00Z"},
                request_only=True,
            )
        ],
    )
    def post(self, request, id: str):
        invoice = _invoice(request, id)
        payload = PaymentRecordSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        payment = services.payment_record(
            invoice=invoice,
            actor=request.auth,
            amount=from_minor_units(data["amount"], invoice.currency),
            reference=data.get("reference", ""),
            paid_at=data.get("paid_at"),
            method=data["method"],
        )
        return Response(PaymentSerializer(payment).data, status=status.HTTP_201_CREATED)


class CreditNoteRefundView(APIView):
    @extend_schema(
        request=CreditNoteRefundSerializer,
        responses={201: RefundSerializer(many=True)},
        summary="Refund what a credit note owes the customer",
        description="Gives back the credit note's `refund_owed` from the invoice's payments: through "
        "Stripe for Stripe payments, recorded (with your `reference`) for payments made through your "
        "own processor. 422 `nothing_to_refund` when nothing is owed or already refunded.",
    )
    def post(self, request, id: str):
        note = invoicing_selectors.credit_note_list(project=request.auth.project).filter(public_id=id).first()
        if note is None:
            raise NotFound(f"No such credit note: '{id}'.")
        payload = CreditNoteRefundSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        refunds = services.credit_note_refund(
            credit_note=note, actor=request.auth, reference=payload.validated_data.get("reference", "")
        )
        return Response(RefundSerializer(refunds, many=True).data, status=status.HTTP_201_CREATED)
