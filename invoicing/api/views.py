import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_site.api.filters import CreatedFilterSet, MomentFilter
from billing_site.api.views import ListRetrieveViewSet
from billing_site.downloads import pdf_response
from billing_site.errors import Unprocessable
from billing_site.money import from_minor_units
from catalog.api.filters import CustomerRefFilter
from invoicing import selectors, services
from invoicing.api.serializers import (
    AdjustmentSerializer,
    CreditNoteCreateSerializer,
    CreditNoteSerializer,
    InvoiceEmailSerializer,
    InvoicePreviewSerializer,
    InvoiceSerializer,
    PreviewRequestSerializer,
    ReasonSerializer,
)
from invoicing.billing import invoice_preview
from invoicing.documents import credit_note_pdf, invoice_pdf, pdf_name
from invoicing.drafts import drafts_freshen
from invoicing.emails import invoice_email_resend
from invoicing.models import CreditNote, Invoice, InvoiceStatus
from subscriptions.services import period_grid

# A document download: the PDF's bytes (errors are still the JSON envelope).
PDF_RESPONSES = {(200, "application/pdf"): OpenApiTypes.BINARY}


class InvoiceFilter(CreatedFilterSet):
    customer = CustomerRefFilter()
    subscription = django_filters.CharFilter(
        field_name="subscription__public_id", help_text="A subscription ID."
    )
    status = django_filters.MultipleChoiceFilter(choices=InvoiceStatus.choices)
    period_start_after = MomentFilter(field_name="period_start", lookup_expr="gte")
    period_start_before = MomentFilter(field_name="period_start", lookup_expr="lt")

    class Meta:
        model = Invoice
        fields = ["number", "billing_reason"]


class InvoiceViewSet(ListRetrieveViewSet):
    """Invoices with their lines. Drafts are the upcoming invoices, priced as usage arrives
    (`?status=draft&customer=…`); issued invoices never change: void them or credit them."""

    serializer_class = InvoiceSerializer
    filterset_class = InvoiceFilter

    def get_project_queryset(self):
        return selectors.invoice_list(project=self.project)

    def list(self, request, *args, **kwargs):
        drafts_freshen(self.filter_queryset(self.get_queryset()))
        return super().list(request, *args, **kwargs)

    def get_object(self):
        invoice = super().get_object()
        if invoice.status == InvoiceStatus.DRAFT and drafts_freshen(Invoice.objects.filter(pk=invoice.pk)):
            invoice = super().get_object()
        return invoice

    def _answer(self, invoice: Invoice) -> Response:
        return Response(InvoiceSerializer(self.get_project_queryset().get(pk=invoice.pk)).data)

    def _reason(self, request) -> str:
        payload = ReasonSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return payload.validated_data["reason"]

    @extend_schema(
        request=None,
        responses=PDF_RESPONSES,
        summary="Download the invoice as a PDF",
        description="The kept document of an issued invoice (rendered once when it was issued), or "
        "a rendering of a draft or an invoice in review marked DRAFT on every page. "
        "`Content-Disposition` names the file after the invoice number.",
    )
    @action(detail=True, methods=["get"])
    def pdf(self, request, id=None):
        invoice = self.get_object()
        return pdf_response(invoice_pdf(invoice), pdf_name(invoice.number, invoice.public_id))

    @extend_schema(
        request=None,
        responses={202: InvoiceEmailSerializer},
        summary="Email an issued invoice again",
        description="Queues one more email of the invoice, with its PDF, to the customer's invoice "
        "addresses; `last_delivery` on the invoice follows it. 422 for a draft, a voided invoice, or "
        "a customer without an email address.",
    )
    @action(detail=True, methods=["post"])
    def send(self, request, id=None):
        email = invoice_email_resend(invoice=self.get_object(), actor=request.auth)
        return Response(InvoiceEmailSerializer(email).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ReasonSerializer, responses=InvoiceSerializer, summary="Void an open invoice")
    @action(detail=True, methods=["post"])
    def void(self, request, id=None):
        reason = self._reason(request)
        return self._answer(
            services.invoice_void(invoice=self.get_object(), actor=request.auth, reason=reason)
        )

    @extend_schema(
        request=None,
        responses=InvoiceSerializer,
        summary="Mark an open invoice uncollectible",
        description="Stop collecting it (dunning ends). It stays issued and owed: a payment recorded "
        "later still settles it. 422 unless the invoice is open.",
    )
    @action(detail=True, methods=["post"], url_path="mark-uncollectible")
    def mark_uncollectible(self, request, id=None):
        return self._answer(
            services.invoice_mark_uncollectible(invoice=self.get_object(), actor=request.auth)
        )

    @extend_schema(request=None, responses=InvoiceSerializer, summary="Approve an invoice pending review")
    @action(detail=True, methods=["post"])
    def approve(self, request, id=None):
        return self._answer(services.invoice_approve(invoice=self.get_object(), actor=request.auth))

    @extend_schema(
        request=ReasonSerializer, responses=InvoiceSerializer, summary="Reject an invoice pending review"
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, id=None):
        reason = self._reason(request)
        return self._answer(
            services.invoice_reject(invoice=self.get_object(), actor=request.auth, reason=reason)
        )

    @extend_schema(
        request=AdjustmentSerializer, responses=InvoiceSerializer, summary="Add an adjustment line"
    )
    @action(detail=True, methods=["post"])
    def adjustments(self, request, id=None):
        invoice = self.get_object()
        payload = AdjustmentSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        services.invoice_add_adjustment(
            invoice=invoice,
            actor=request.auth,
            description=data["description"],
            reason=data["reason"],
            amount=from_minor_units(data["amount"], invoice.currency),
        )
        return self._answer(invoice)

    @extend_schema(
        request=CreditNoteCreateSerializer,
        responses={201: CreditNoteSerializer},
        summary="Issue a credit note",
    )
    @action(detail=True, methods=["post"], url_path="credit-notes")
    def credit_notes(self, request, id=None):
        invoice = self.get_object()
        payload = CreditNoteCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        lines = None
        if data.get("lines"):
            by_id = {line.public_id: line for line in invoice.lines.all()}
            lines = []
            for index, item in enumerate(data["lines"]):
                line = by_id.get(item["line"])
                if line is None:
                    raise Unprocessable(
                        f"No line '{item['line']}' on this invoice.",
                        code="unknown_line",
                        param=f"lines[{index}].line",
                    )
                amount = item.get("amount")
                lines.append(
                    {
                        "line": line,
                        **({} if amount is None else {"amount": from_minor_units(amount, invoice.currency)}),
                    }
                )
        amount = data.get("amount")
        note = services.credit_note_create(
            invoice=invoice,
            actor=request.auth,
            reason=data["reason"],
            memo=data.get("memo", ""),
            lines=lines,
            amount=None if amount is None else from_minor_units(amount, invoice.currency),
        )
        note = selectors.credit_note_list(project=self.project).get(pk=note.pk)
        return Response(CreditNoteSerializer(note).data, status=status.HTTP_201_CREATED)


class InvoicePreviewView(APIView):
    """Price a subscription's current period, or a past one, optionally as if on another plan.
    Nothing is saved."""

    @extend_schema(
        request=PreviewRequestSerializer, responses=InvoicePreviewSerializer, summary="Preview an invoice"
    )
    def post(self, request):
        payload = PreviewRequestSerializer(data=request.data, context={"request": request})
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        subscription = data["subscription"]
        period = None
        if "period_start" in data:
            if data["period_start"] < subscription.period_anchor:
                raise Unprocessable(
                    "The subscription had not started then.", code="before_start", param="period_start"
                )
            period = period_grid(subscription).period_at(data["period_start"])
        invoice = invoice_preview(subscription=subscription, plan=data.get("plan"), period=period)
        return Response(InvoicePreviewSerializer(invoice).data)


class CreditNoteFilter(CreatedFilterSet):
    invoice = django_filters.CharFilter(field_name="invoice__public_id")
    customer = CustomerRefFilter("invoice__customer")

    class Meta:
        model = CreditNote
        fields = ["reason"]


class CreditNoteViewSet(ListRetrieveViewSet):
    serializer_class = CreditNoteSerializer
    filterset_class = CreditNoteFilter

    def get_project_queryset(self):
        return selectors.credit_note_list(project=self.project)

    @extend_schema(
        request=None,
        responses=PDF_RESPONSES,
        summary="Download the credit note as a PDF",
    )
    @action(detail=True, methods=["get"])
    def pdf(self, request, id=None):
        note = self.get_object()
        return pdf_response(credit_note_pdf(note), pdf_name(note.number, note.public_id))
