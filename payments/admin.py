"""The payments back office: payments, the reconciliation queue, refunds, payouts, the balance
ledger, processor events and payment methods; and what payments adds to invoicing's pages (an
invoice's payments and "Record payment…", a credit note's refunds and "Refund…").

Every row here is a financial record: read-only, and scoped to the user's projects. The actions
(record a payment, match one to an invoice, refund a credit note) are buttons that call
payments.services, for `billing_admin` and `owner` (billing_site.admin.ObjectActionsMixin). Amounts
read in their currency, as the project's locale writes money (billing_site.admin_display).
"""

import json

from django import forms
from django.contrib import admin
from django.db.models import F, Prefetch, Sum, Window
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from billing_site.admin import (
    CalendarMonthFilter,
    CappedPaginator,
    ObjectActionsMixin,
    ProjectListFilter,
    ProjectScopedAdmin,
    ReadOnlyAdminMixin,
    ReadOnlyInline,
)
from billing_site.admin_display import money_column, money_text
from billing_site.money import round_money
from invoicing.admin import CreditNoteAdmin, InvoiceAdmin
from invoicing.models import CreditNote, Invoice
from payments import services
from payments.models import (
    BalanceEntry,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Payout,
    ProcessorEvent,
    Refund,
    UnmatchedPayment,
)


def _link(obj) -> str:
    """A link to the object's admin page."""
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj)


class AmountColumn:
    amount_label = money_column("amount", description="amount")


class LedgerColumns(AmountColumn):
    @admin.display(description="available", ordering="available_at")
    def available_label(self, entry) -> str:
        """When the movement's money is available for payout, and whether it is yet."""
        state = "available" if entry.available_at <= timezone.now() else "pending"
        return f"{entry.available_at:%Y-%m-%d %H:%M} ({state})"


class RecordColumns(AmountColumn):
    """Columns of payments, refunds and payouts: the amount in its currency, the failure in a line."""

    @admin.display(description="failure")
    def failure_label(self, record) -> str:
        failure = ": ".join(
            part for part in (getattr(record, "failure_code", ""), record.failure_message) if part
        )
        return Truncator(failure).chars(80) or "-"


class PaymentColumns(RecordColumns):
    fee_label = money_column("fee", description="fee")
    net_label = money_column("net", description="net")
    refunded_label = money_column("amount_refunded", description="refunded")

    @admin.display(description="invoice", ordering="invoice")
    def invoice_link(self, payment) -> str:
        return _link(payment.invoice) if payment.invoice_id else "-"


# --- inlines -------------------------------------------------------------------------------------


class LedgerInline(LedgerColumns, ReadOnlyInline):
    """The balance entries of a payment, a refund or a payout (BalanceEntry has one key to each)."""

    model = BalanceEntry
    verbose_name_plural = "balance entries"
    fields = ["created_at", "kind", "reference", "description", "amount_label", "available_label"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("project")


class RefundInline(RecordColumns, ReadOnlyInline):
    """The refunds of a payment, or of a credit note."""

    model = Refund
    show_change_link = True
    fields = ["credit_note", "processor", "processor_reference", "amount_label", "status", "failure_label"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("project", "credit_note")


class InvoicePaymentInline(PaymentColumns, ReadOnlyInline):
    """An invoice's payments (every collection attempt) with their refunds."""

    model = Payment
    fk_name = "invoice"
    verbose_name_plural = "payments"
    show_change_link = True
    fields = [
        "status", "processor", "method", "processor_reference", "amount_label", "refunds_label", "attempt",
        "failure_label", "paid_at",
    ]  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request):
        refunds = Refund.objects.select_related("project", "credit_note").order_by("id")
        return (
            super()
            .get_queryset(request)
            .select_related("project")
            .prefetch_related(Prefetch("refunds", refunds))
        )

    @admin.display(description="refunds")
    def refunds_label(self, payment) -> str:
        refunds = (
            (
                _link(refund),
                money_text(refund, refund.amount),
                refund.credit_note or "-",
                refund.get_status_display(),
            )
            for refund in payment.refunds.all()
        )
        return format_html_join(mark_safe("<br>"), "{} {} for {} ({})", refunds) or "-"


# --- payments and the reconciliation queue ------------------------------------------------------


class PaidMonthFilter(CalendarMonthFilter):
    """Payments paid in a calendar month, UTC (the dashboard's "collected" links here)."""

    title = "paid in (month, UTC)"
    parameter_name = "paid_month"
    field = "paid_at"


@admin.register(Payment)
class PaymentAdmin(PaymentColumns, ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = [
        "public_id", "invoice_link", "customer", "processor", "processor_reference", "method", "status",
        "amount_label", "fee_label", "net_label", "refunded_label", "attempt", "failure_label", "paid_at",
        "available_at", "project",
    ]  # fmt: skip
    list_filter = [ProjectListFilter, "status", "processor", PaidMonthFilter]
    search_fields = [
        "=public_id", "processor_reference", "invoice__number", "customer__name", "customer__external_id",
    ]  # fmt: skip
    list_select_related = ["invoice", "customer", "project"]
    paginator = CappedPaginator
    show_full_result_count = False
    inlines = [RefundInline, LedgerInline]
    fields = [
        "public_id", "invoice_link", "customer", "processor", "processor_reference", "charge_reference",
        "payment_method", "method", "status", "amount_label", "fee_label", "net_label", "refunded_label",
        "attempt", "failure_code", "failure_message", "next_retry_at", "paid_at", "available_at",
        "created_at", "updated_at", "audit_trail",
    ]  # fmt: skip
    readonly_fields = fields


class MatchForm(forms.Form):
    invoice = forms.ModelChoiceField(queryset=Invoice.objects.none())

    def __init__(self, data=None, *, payment: Payment):
        super().__init__(data)
        field = self.fields["invoice"]
        field.queryset = (
            Invoice.objects.filter(
                project_id=payment.project_id,
                currency=payment.currency,
                status__in=services.PAYABLE_STATUSES,
            )
            .select_related("customer", "project")
            .order_by("customer__name", "id")
        )
        field.label_from_instance = lambda invoice: (
            f"{invoice.number} · {invoice.customer.name} · {money_text(invoice, invoice.amount_due)} due"
        )
        field.help_text = (
            f"The open and uncollectible invoices of {payment.project} in {payment.currency}. "
            f"The payment of {money_text(payment, payment.amount)} then counts towards it; it must not be "
            "more than the amount due."
        )


@admin.register(UnmatchedPayment)
class UnmatchedPaymentAdmin(ObjectActionsMixin, PaymentAdmin):
    """The reconciliation queue: payments the processor reported that match no invoice, each to be
    matched to the invoice it pays."""

    list_display = [
        "public_id", "paid_at", "customer", "processor", "processor_reference", "method", "status",
        "amount_label", "project",
    ]  # fmt: skip
    change_form_template = "admin/payments/unmatchedpayment/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(invoice__isnull=True)

    def _may_match(self, request, payment: Payment) -> bool:
        return payment.status == PaymentStatus.SUCCEEDED and self.may_act(request, payment)

    def get_list_display(self, request):
        @admin.display(description="")
        def match(payment):
            if not self._may_match(request, payment):
                return ""
            url = reverse("admin:payments_unmatchedpayment_match", args=[payment.pk])
            return format_html('<a class="button" href="{}">Match to invoice…</a>', url)

        return [*self.list_display, match]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_match"] = self._may_match(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        match = path(
            "<int:pk>/match/",
            self.admin_site.admin_view(self.match_view),
            name="payments_unmatchedpayment_match",
        )
        return [match, *super().get_urls()]

    def _return_url(self, obj) -> str:
        # Matched, the payment leaves the queue: back to the queue, for the next one.
        return reverse("admin:payments_unmatchedpayment_changelist")

    def match_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            MatchForm,
            lambda payment, data: services.payment_match(
                payment=payment, invoice=data["invoice"], actor=request.user
            ),
            success="Matched: the payment counts towards the invoice.",
            title="Match {obj} to an invoice",
            button="Match",
            form_kwargs=lambda payment: {"payment": payment},
        )


# --- the invoice's and the credit note's pages ---------------------------------------------------


class RecordPaymentForm(forms.Form):
    amount = forms.DecimalField()
    reference = forms.CharField(
        max_length=255,
        required=False,
        help_text="Your processor's ID of the payment, or the bank transfer's reference; each is "
        "recorded once.",
    )
    paid_at = forms.DateTimeField(label="Paid at", help_text="UTC, e.g. 2026-11-02 09:30.")
    method = forms.ChoiceField(
        choices=[(method, method.replace("_", " ").capitalize()) for method in services.MANUAL_METHODS]
    )

    def __init__(self, data=None, *, invoice: Invoice):
        due = money_text(invoice, invoice.amount_due)
        amount = round_money(invoice.amount_due, invoice.currency)  # 100.00 rather than 100.0000
        super().__init__(data, initial={"amount": amount, "paid_at": timezone.now()})
        self.fields["amount"].label = f"Amount ({invoice.currency})"
        self.fields["amount"].help_text = f"{due} is due. Record part of it, or all."


# Payments depends on invoicing, never the reverse, so invoicing/admin.py cannot show payments:
# the invoice's page learns of them here, from a subclass registered in InvoiceAdmin's place.
# Subclassing (rather than appending to InvoiceAdmin.inlines from here) leaves invoicing's classes
# as they are, the review queue built on InvoiceAdmin included, and keeps all that payments adds to
# the page in one class. The same for the credit note's page.
admin.site.unregister(Invoice)
admin.site.unregister(CreditNote)


@admin.register(Invoice)
class InvoicePaymentsAdmin(InvoiceAdmin):
    inlines = [*InvoiceAdmin.inlines, InvoicePaymentInline]
    change_form_template = "admin/payments/invoice/change_form.html"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_record_payment"] = obj.status in services.PAYABLE_STATUSES
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        record = path(
            "<int:pk>/record-payment/",
            self.admin_site.admin_view(self.record_payment_view),
            name="invoicing_invoice_record_payment",
        )
        return [record, *super().get_urls()]

    def record_payment_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            RecordPaymentForm,
            lambda invoice, data: services.payment_record(
                invoice=invoice,
                actor=request.user,
                amount=data["amount"],
                reference=data["reference"],
                paid_at=data["paid_at"],
                method=data["method"],
            ),
            success="Payment recorded.",
            title="Record a payment of {obj}",
            button="Record payment",
            form_kwargs=lambda invoice: {"invoice": invoice},
        )


class RefundForm(forms.Form):
    reference = forms.CharField(max_length=255, required=False)

    def __init__(self, data=None, *, owed: str):
        super().__init__(data)
        self.fields["reference"].help_text = (
            f"{owed} is owed back, refunded from the invoice's payments, latest first. Stripe payments "
            "are refunded through Stripe; for a payment recorded for your own processor, the reference "
            "of your refund (a bank transfer)."
        )


@admin.register(CreditNote)
class CreditNoteRefundsAdmin(ObjectActionsMixin, CreditNoteAdmin):
    inlines = [RefundInline]
    change_form_template = "admin/payments/creditnote/change_form.html"
    readonly_fields = [*CreditNoteAdmin.readonly_fields, "refund_left"]

    @admin.display(description="refund owed, not yet refunded")
    def refund_left(self, note) -> str:
        return money_text(note, services.refund_owed(note), currency="invoice__currency")

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_refund"] = self.may_act(request, obj) and services.refund_owed(obj) > 0
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        refund = path(
            "<int:pk>/refund/",
            self.admin_site.admin_view(self.refund_view),
            name="invoicing_creditnote_refund",
        )
        return [refund, *super().get_urls()]

    def refund_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            RefundForm,
            lambda note, data: services.credit_note_refund(
                credit_note=note, actor=request.user, reference=data["reference"]
            ),
            success="Refunded: the refunds are listed below.",
            title="Refund {obj}",
            button="Refund",
            form_kwargs=lambda note: {"owed": self.refund_left(note)},
        )


# --- refunds, payouts, the ledger, processor events, payment methods ------------------------------


@admin.register(Refund)
class RefundAdmin(RecordColumns, ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = [
        "public_id", "payment_link", "invoice_link", "credit_note", "processor", "processor_reference",
        "amount_label", "status", "failure_label", "created_at", "project",
    ]  # fmt: skip
    list_filter = [ProjectListFilter, "status", "processor"]
    search_fields = [
        "=public_id", "processor_reference", "payment__public_id", "payment__invoice__number",
        "credit_note__number",
    ]  # fmt: skip
    list_select_related = ["payment__invoice", "credit_note", "project"]
    paginator = CappedPaginator
    show_full_result_count = False
    inlines = [LedgerInline]
    fields = [
        "public_id", "payment", "invoice_link", "credit_note", "processor", "processor_reference",
        "amount_label", "status", "failure_message", "created_at", "updated_at", "audit_trail",
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="payment", ordering="payment")
    def payment_link(self, refund) -> str:
        return _link(refund.payment)

    @admin.display(description="invoice")
    def invoice_link(self, refund) -> str:
        return _link(refund.payment.invoice) if refund.payment.invoice_id else "-"


@admin.register(Payout)
class PayoutAdmin(RecordColumns, ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = [
        "public_id", "processor", "processor_reference", "amount_label", "status", "arrival_at", "paid_at",
        "failure_label", "created_at", "project",
    ]  # fmt: skip
    list_filter = [ProjectListFilter, "status", "processor"]
    search_fields = ["=public_id", "processor_reference"]
    list_select_related = ["project"]
    paginator = CappedPaginator
    show_full_result_count = False
    inlines = [LedgerInline]
    fields = [
        "public_id", "processor", "processor_reference", "amount_label", "status", "arrival_at", "paid_at",
        "failure_code", "failure_message", "created_at", "updated_at",
    ]  # fmt: skip
    readonly_fields = fields


@admin.register(BalanceEntry)
class BalanceEntryAdmin(LedgerColumns, ReadOnlyAdminMixin, ProjectScopedAdmin):
    """The project's balance movement by movement, with the balance after each.

    The running balance is a window over the rows the query selects, in one query: per project and
    currency, summed in id order (the order the movements were entered), whatever order the page
    shows. So the page offers only filters that keep or drop whole (project, currency) partitions;
    a filter by kind, or a search, would make it the running sum of the rows found.
    """

    list_display = [
        "created_at", "kind", "reference", "description", "amount_label", "balance_label", "available_label",
        "source", "project",
    ]  # fmt: skip
    list_filter = [ProjectListFilter, "currency"]
    list_select_related = ["project", "payment", "refund", "payout"]
    paginator = CappedPaginator
    show_full_result_count = False
    fields = ["kind", "reference", "description", "amount_label", "available_label", "source", "created_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        running = Window(Sum("amount"), partition_by=[F("project"), F("currency")], order_by=F("id").asc())
        return super().get_queryset(request).annotate(running_balance=running)

    @admin.display(description="balance")
    def balance_label(self, entry) -> str:
        # SQLite sums decimals as floats (99.9999999999999 for 100): money_text rounds to the
        # currency's minor unit (billing_site.money.round_money) before formatting.
        return money_text(entry, entry.running_balance)

    @admin.display(description="of")
    def source(self, entry) -> str:
        records = [record for record in (entry.payment, entry.refund, entry.payout) if record is not None]
        return format_html_join(" · ", "{} {}", ((r._meta.verbose_name, _link(r)) for r in records)) or "-"


@admin.register(ProcessorEvent)
class ProcessorEventAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    """Events the processor sent (Stripe's webhooks), as received, and what handling them did."""

    list_display = [
        "received_at", "type", "event_id", "processed_at", "outcome", "error_label", "processor", "project",
    ]  # fmt: skip
    list_filter = [ProjectListFilter, "processor", ("processed_at", admin.EmptyFieldListFilter)]
    search_fields = ["=event_id", "type"]
    list_select_related = ["project"]
    paginator = CappedPaginator
    show_full_result_count = False
    fields = [
        "processor", "event_id", "type", "received_at", "processed_at", "outcome", "error", "payload_label",
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="error")
    def error_label(self, event) -> str:
        return Truncator(event.error).chars(80) or "-"

    @admin.display(description="payload")
    def payload_label(self, event) -> str:
        text = json.dumps(event.payload, indent=2, ensure_ascii=False)
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text)


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = [
        "__str__", "customer", "type", "expiry", "is_default", "processor_id", "created_at", "detached_at",
        "project",
    ]  # fmt: skip
    list_filter = [ProjectListFilter, "type", "is_default"]
    search_fields = ["=public_id", "=processor_id", "customer__name", "customer__external_id"]
    list_select_related = ["customer", "project"]

    @admin.display(description="expires")
    def expiry(self, method) -> str:
        return f"{method.exp_month:02d}/{method.exp_year}" if method.exp_month and method.exp_year else "-"
