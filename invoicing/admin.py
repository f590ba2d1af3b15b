"""The finance back office: the review queue, invoice pages, their PDFs and the email log.

Invoices are never edited as forms. Staff act on them through explicit buttons (approve, reject,
add an adjustment, void, mark uncollectible, credit, send again) that call the same services as the
API, so every action is audited and emits its event (billing_site.admin.ObjectActionsMixin).
`billing_admin` and `owner` may act; `viewer` reads, which includes downloading PDFs and previewing
the email. Payments are shown and recorded on the invoice's page by payments/admin.py.
"""

from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from billing_site.admin import (
    CappedPaginator,
    ObjectActionsMixin,
    ProjectListFilter,
    ProjectScopedAdmin,
    ReadOnlyAdminMixin,
    ReadOnlyInline,
)
from billing_site.downloads import pdf_response
from billing_site.errors import DomainError
from billing_site.formats import money
from billing_site.money import round_money
from invoicing import credits, services
from invoicing.documents import credit_note_pdf, invoice_pdf, pdf_name
from invoicing.drafts import drafts_freshen
from invoicing.emails import email_compose, invoice_email_resend, recipients
from invoicing.models import (
    ISSUED_STATUSES,
    CreditEntry,
    CreditGrant,
    CreditNote,
    CreditNoteReason,
    Invoice,
    InvoiceEmail,
    InvoiceLine,
    InvoiceStatus,
    LineType,
    PendingReviewInvoice,
    Wallet,
)


def _money(amount: Decimal, currency: str) -> str:
    return f"{round_money(amount, currency):,} {currency}"


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


class AdjustmentForm(forms.Form):
    description = forms.CharField(max_length=300, help_text="As the customer will read it on the invoice.")
    amount = forms.DecimalField(help_text="In the invoice's currency; negative for a credit.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


class CreditNoteForm(forms.Form):
    reason = forms.ChoiceField(choices=CreditNoteReason.choices)
    amount = forms.DecimalField(required=False, help_text="Leave empty to credit the whole invoice.")
    memo = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


class LineInline(ReadOnlyInline):
    model = InvoiceLine
    fk_name = "invoice"
    fields = ["type", "description", "period", "quantity", "unit_price", "amount", "breakdown", "usage"]
    readonly_fields = fields

    @admin.display(description="period")
    def period(self, line):
        return f"{line.period_start:%Y-%m-%d %H:%M} → {line.period_end:%Y-%m-%d %H:%M}"

    @admin.display(description="tier breakdown")
    def breakdown(self, line):
        if not line.tiers and not line.reason:
            return "-"
        rows = format_html_join(
            "",
            "<li>tier {}: {} × {} + {} = {}</li>",
            ((t["tier"], t["units"], t["unit_price"], t["flat_fee"], t["amount"]) for t in line.tiers),
        )
        reason = format_html("<li><em>{}</em></li>", line.reason) if line.reason else ""
        return format_html('<ul style="margin:0">{}{}</ul>', rows, reason)

    @admin.display(description="usage")
    def usage(self, line):
        if line.type not in (LineType.USAGE, LineType.LATE_USAGE) or line.meter_id is None:
            return "-"
        query = urlencode(
            {
                "customer": line.invoice.customer.public_id,
                "meter": line.meter_id,
                "from": line.period_start.isoformat(),
                "to": line.period_end.isoformat(),
                "status": "matched",
            }
        )
        url = f"{reverse('admin:meters_usageevent_changelist')}?{query}"
        return format_html('<a href="{}">events</a>', url)


class RecipientLabels:
    """An email's recipients as a line to read, not a JSON list."""

    @admin.display(description="to")
    def to_label(self, email):
        return ", ".join(email.to) or "-"

    @admin.display(description="cc")
    def cc_label(self, email):
        return ", ".join(email.cc) or "-"


class EmailInline(RecipientLabels, ReadOnlyInline):
    """The invoice's delivery log: every sending, newest first."""

    model = InvoiceEmail
    fk_name = "invoice"
    verbose_name_plural = "emails"
    fields = [
        "created_at",
        "reason",
        "status",
        "to_label",
        "cc_label",
        "attempts",
        "sent_at",
        "message_id",
        "error",
    ]
    readonly_fields = fields


def _previous_total():
    # The opening invoice and the first cycle invoice share a period start: order by creation.
    previous = (
        Invoice.objects.filter(subscription=OuterRef("subscription"), pk__lt=OuterRef("pk"))
        .exclude(status=InvoiceStatus.VOID)
        .order_by("-pk")
    )
    return Subquery(previous.values("total")[:1])


@admin.register(Invoice)
class InvoiceAdmin(ObjectActionsMixin, ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = [
        "label",
        "customer",
        "status",
        "period_label",
        "total_label",
        "change",
        "issued_at",
        "project",
    ]
    list_filter = [ProjectListFilter, "status", "billing_reason", "currency"]
    search_fields = ["number", "public_id", "customer__name", "customer__email", "customer__external_id"]
    list_select_related = ["customer", "project"]
    paginator = CappedPaginator
    show_full_result_count = False
    inlines = [LineInline, EmailInline]
    actions = ["approve_selected", "reject_selected"]
    change_form_template = "admin/invoicing/invoice/change_form.html"
    action_form_template = "admin/invoicing/invoice/action_form.html"
    readonly_fields = [
        "public_id",
        "number",
        "status",
        "customer",
        "subscription",
        "billing_reason",
        "period_label",
        "waterfall",
        "total_label",
        "tax_note",
        "amount_credited",
        "amount_paid",
        "issued_at",
        "due_at",
        "reviewed_label",
        "voided_at",
        "void_reason",
        "credit_notes_list",
        "audit_trail",
    ]
    fields = readonly_fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(previous_total=_previous_total())

    def changelist_view(self, request, extra_context=None):
        drafts_freshen(self.get_queryset(request))  # drafts show the usage accepted until now
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if str(object_id).isdigit():
            drafts_freshen(self.get_queryset(request).filter(pk=object_id))
        return super().change_view(request, object_id, form_url, extra_context)

    # --- what a finance person reads ------------------------------------------------------------
    @admin.display(description="invoice", ordering="id")
    def label(self, invoice):
        return invoice.number or f"Draft {invoice.public_id}"

    @admin.display(description="period")
    def period_label(self, invoice):
        return f"{invoice.period_start:%Y-%m-%d} → {invoice.period_end:%Y-%m-%d}"

    @admin.display(description="how the total comes")
    def waterfall(self, invoice):
        """Subtotal, discount, tax, total, prepaid credits, amount due (docs/pricing.md)."""
        steps = [
            ("subtotal", invoice.subtotal),
            ("discount", -invoice.discount),
            ("tax", invoice.tax),
            ("total", invoice.total),
            ("prepaid credits", -invoice.credits_applied),
            ("amount due", invoice.amount_due),
        ]
        return " · ".join(f"{name} {_money(amount, invoice.currency)}" for name, amount in steps)

    @admin.display(description="total", ordering="total")
    def total_label(self, invoice):
        return _money(invoice.total, invoice.currency)

    @admin.display(description="vs previous")
    def change(self, invoice):
        previous = getattr(invoice, "previous_total", None)
        if previous is None:
            return "first"
        if previous == 0:
            return "—" if invoice.total == 0 else "new charges"
        percent = (invoice.total - previous) / previous * 100
        return f"{round_money(invoice.total - previous, invoice.currency):+,} ({percent:+.0f} %)"

    @admin.display(description="reviewed")
    def reviewed_label(self, invoice):
        if not invoice.reviewed_at:
            return "-"
        return f"{invoice.reviewed_at:%Y-%m-%d %H:%M} by {invoice.reviewed_by or 'API key'}"

    @admin.display(description="credit notes")
    def credit_notes_list(self, invoice):
        notes = invoice.credit_notes.all()
        return (
            format_html_join(", ", "{} ({} {})", ((n.number, n.amount, invoice.currency) for n in notes))
            or "-"
        )

    # --- actions --------------------------------------------------------------------------------
    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_act"] = self.may_act(request, obj)
            context["invoice"] = obj
            # A voided invoice is not emailed again; its PDF stays available (marked VOID when it
            # was rejected in review and so never issued).
            context["may_preview_email"] = obj.status != InvoiceStatus.VOID
            context["may_send"] = obj.status in ISSUED_STATUSES
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        def view(name, handler):
            return path(
                f"<int:pk>/{name}/", self.admin_site.admin_view(handler), name=f"invoicing_invoice_{name}"
            )

        return [
            view("approve", self.approve_view),
            view("reject", self.reject_view),
            view("adjust", self.adjust_view),
            view("void", self.void_view),
            view("credit", self.credit_view),
            view("pdf", self.pdf_view),
            view("email", self.email_preview_view),
            view("resend", self.resend_view),
            view("uncollectible", self.uncollectible_view),
            *super().get_urls(),
        ]

    def approve_view(self, request, pk):
        invoice = self._acting_on(request, pk)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[pk]))
        return self._run(
            request,
            invoice,
            lambda: services.invoice_approve(invoice=invoice, actor=request.user),
            "Approved and issued.",
        )

    def resend_view(self, request, pk):
        invoice = self._acting_on(request, pk)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[pk]))
        to, cc = recipients(invoice.customer)
        return self._run(
            request,
            invoice,
            lambda: invoice_email_resend(invoice=invoice, actor=request.user),
            f"Queued: the invoice will be emailed to {', '.join(to + cc)}.",
        )

    def uncollectible_view(self, request, pk):
        invoice = self._acting_on(request, pk)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[pk]))
        return self._run(
            request,
            invoice,
            lambda: services.invoice_mark_uncollectible(invoice=invoice, actor=request.user),
            "Marked uncollectible. A payment recorded later still settles it.",
        )

    def pdf_view(self, request, pk):
        invoice = self._visible(request, pk)
        return pdf_response(
            invoice_pdf(invoice), pdf_name(invoice.number, invoice.public_id), attachment=True
        )

    def email_preview_view(self, request, pk):
        invoice = self._visible(request, pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Email of {invoice}",
            "invoice": invoice,
            "email": email_compose(invoice),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/invoicing/invoice/email_preview.html", context)

    def reject_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            ReasonForm,
            lambda invoice, data: services.invoice_reject(
                invoice=invoice, actor=request.user, reason=data["reason"]
            ),
            success="Rejected: the invoice is void.",
            title="Reject {obj}",
            button="Reject",
        )

    def void_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            ReasonForm,
            lambda invoice, data: services.invoice_void(
                invoice=invoice, actor=request.user, reason=data["reason"]
            ),
            success="Voided.",
            title="Void {obj}",
            button="Void invoice",
        )

    def adjust_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            AdjustmentForm,
            lambda invoice, data: services.invoice_add_adjustment(
                invoice=invoice,
                actor=request.user,
                amount=data["amount"],
                description=data["description"],
                reason=data["reason"],
            ),
            success="Adjustment added.",
            title="Add an adjustment to {obj}",
            button="Add adjustment",
        )

    def credit_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            CreditNoteForm,
            lambda invoice, data: services.credit_note_create(
                invoice=invoice,
                actor=request.user,
                reason=data["reason"],
                memo=data["memo"],
                amount=data["amount"],
            ),
            success="Credit note issued.",
            title="Credit {obj}",
            button="Issue credit note",
        )

    @admin.action(description="Approve selected invoices", permissions=["act"])
    def approve_selected(self, request, queryset):
        approved = 0
        for invoice in queryset.filter(status=InvoiceStatus.PENDING_REVIEW):
            try:
                services.invoice_approve(invoice=invoice, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"{invoice}: {exc.message}")
            else:
                approved += 1
        messages.success(request, f"Approved {approved} invoice(s).")

    @admin.action(description="Reject selected invoices…", permissions=["act"])
    def reject_selected(self, request, queryset):
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_bound and form.is_valid():
            rejected = 0
            for invoice in queryset.filter(status=InvoiceStatus.PENDING_REVIEW):
                try:
                    services.invoice_reject(
                        invoice=invoice, actor=request.user, reason=form.cleaned_data["reason"]
                    )
                except DomainError as exc:
                    messages.error(request, f"{invoice}: {exc.message}")
                else:
                    rejected += 1
            messages.success(request, f"Rejected {rejected} invoice(s).")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Reject invoices",
            "form": form,
            "invoices": queryset,
            "opts": self.model._meta,
            "action": "reject_selected",
        }
        return TemplateResponse(request, "admin/invoicing/invoice/reject_selected.html", context)

    def has_act_permission(self, request) -> bool:
        return self.may_act(request)


@admin.register(PendingReviewInvoice)
class PendingReviewAdmin(InvoiceAdmin):
    """The daily queue: invoices whose period is over, held for approval."""

    list_display = ["label", "customer", "period_label", "total_label", "change", "project"]
    list_filter = [ProjectListFilter, "currency"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=InvoiceStatus.PENDING_REVIEW)

    def get_urls(self):
        return admin.ModelAdmin.get_urls(self)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[object_id]))


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    change_form_template = "admin/invoicing/creditnote/change_form.html"
    list_display = [
        "number",
        "invoice",
        "reason",
        "amount",
        "refund_owed",
        "created_at",
        "created_by",
        "project",
    ]
    list_filter = [ProjectListFilter, "reason"]
    search_fields = ["number", "public_id", "invoice__number", "invoice__customer__name"]
    readonly_fields = [
        "public_id",
        "number",
        "invoice",
        "reason",
        "memo",
        "amount",
        "amount_credited",
        "refund_owed",
        "created_at",
        "created_by",
    ]

    def get_urls(self):
        return [
            path(
                "<int:pk>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name="invoicing_creditnote_pdf",
            ),
            *super().get_urls(),
        ]

    def pdf_view(self, request, pk):
        note = get_object_or_404(self.get_queryset(request), pk=pk)
        return pdf_response(credit_note_pdf(note), pdf_name(note.number, note.public_id), attachment=True)


@admin.register(InvoiceEmail)
class InvoiceEmailAdmin(RecipientLabels, ReadOnlyAdminMixin, ProjectScopedAdmin):
    """Every invoice email and its fate; failed ones are sent again from the invoice's page."""

    list_display = [
        "created_at",
        "invoice_link",
        "reason",
        "status",
        "to_label",
        "attempts",
        "sent_at",
        "error_label",
        "project",
    ]
    list_filter = [ProjectListFilter, "status", "reason"]
    search_fields = ["invoice__number", "invoice__public_id", "public_id", "to", "cc"]
    list_select_related = ["invoice", "project"]
    paginator = CappedPaginator
    show_full_result_count = False
    readonly_fields = [
        "public_id",
        "invoice_link",
        "reason",
        "status",
        "from_email",
        "reply_to",
        "to_label",
        "cc_label",
        "subject",
        "message_id",
        "attempts",
        "next_attempt_at",
        "error",
        "requested_by",
        "created_at",
        "sent_at",
    ]
    fields = readonly_fields

    @admin.display(description="invoice", ordering="invoice")
    def invoice_link(self, email):
        url = reverse("admin:invoicing_invoice_change", args=[email.invoice_id])
        return format_html('<a href="{}">{}</a>', url, email.invoice)

    @admin.display(description="error")
    def error_label(self, email):
        return Truncator(email.error).chars(80) or "-"


# --- prepaid credits ------------------------------------------------------------------------------
# Wallets, their grants and the ledger are financial records: read-only, never deleted. Credits are
# granted with a button that calls invoicing.credits (billing_admin and owner); viewers read.


def _wallet_money(wallet: Wallet, amount: Decimal | None) -> str:
    """An amount of the wallet, as its project writes money: "$1,234.50", "1.234,50 €"."""
    return "-" if amount is None else money(amount, wallet.currency, wallet.project.locale)


class CreditGrantInline(ReadOnlyInline):
    model = CreditGrant
    fields = ["public_id", "name", "source", "amount", "priority", "expires_at", "available_at", "voided_at"]
    readonly_fields = fields
    ordering = ["priority", "expires_at", "id"]


class CreditEntryInline(ReadOnlyInline):
    """The wallet's ledger, newest first."""

    model = CreditEntry
    fk_name = "grant"
    fields = ["created_at", "kind", "amount", "invoice"]
    readonly_fields = fields


class GrantCreditsForm(forms.Form):
    amount = forms.DecimalField(min_value=Decimal("0.0001"), max_digits=20, decimal_places=4)
    name = forms.CharField(max_length=credits.MAX_NAME, required=False)
    priority = forms.IntegerField(
        min_value=credits.MIN_PRIORITY, max_value=credits.MAX_PRIORITY, initial=credits.DEFAULT_PRIORITY
    )
    expires_at = forms.DateTimeField(required=False, help_text="Empty: never. UTC.")

    def __init__(self, data=None, *, wallet: Wallet):
        super().__init__(data)
        self.fields["amount"].label = f"Amount ({wallet.currency})"
        self.fields["priority"].help_text = "0–100; lower is used first."


@admin.register(Wallet)
class WalletAdmin(ObjectActionsMixin, ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = ["public_id", "customer", "currency", "balance_label", "threshold_label", "project"]
    list_filter = [ProjectListFilter, "currency"]
    search_fields = ["public_id", "customer__name", "customer__external_id", "customer__public_id"]
    list_select_related = ["customer", "project"]
    inlines = [CreditGrantInline]
    change_form_template = "admin/invoicing/wallet/change_form.html"
    readonly_fields = [
        "public_id",
        "customer",
        "currency",
        "balance_label",
        "threshold_label",
        "ledger",
        "created_at",
        "audit_trail",
    ]
    fields = readonly_fields

    @admin.display(description="balance")
    def balance_label(self, wallet):
        return _wallet_money(wallet, credits.wallet_balance(wallet=wallet, at=timezone.now()))

    @admin.display(description="low-balance threshold")
    def threshold_label(self, wallet):
        return _wallet_money(wallet, wallet.low_balance_threshold)

    @admin.display(description="ledger (latest 50)")
    def ledger(self, wallet):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td style='text-align:right'>{}</td><td>{}</td></tr>",
            (
                (
                    f"{entry.created_at:%Y-%m-%d %H:%M}",
                    entry.grant,
                    entry.get_kind_display(),
                    _wallet_money(wallet, entry.amount),
                    entry.invoice or "",
                )
                for entry in credits.wallet_entries(wallet=wallet, limit=50)
            ),
        )
        return format_html(
            "<table><tr><th>when</th><th>grant</th><th>movement</th><th>amount</th><th>invoice</th></tr>{}"
            "</table>",
            rows,
        ) if rows else "-"  # fmt: skip

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_act"] = self.may_act(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        grant = path(
            "<int:pk>/grant/", self.admin_site.admin_view(self.grant_view), name="invoicing_wallet_grant"
        )
        return [grant, *super().get_urls()]

    def grant_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            GrantCreditsForm,
            lambda wallet, data: credits.credits_grant(
                customer=wallet.customer,
                currency=wallet.currency,
                amount=data["amount"],
                name=data["name"],
                priority=data["priority"],
                expires_at=data["expires_at"],
                actor=request.user,
            ),
            success="Credits granted.",
            title="Grant credits to {obj}",
            button="Grant credits",
            form_kwargs=lambda wallet: {"wallet": wallet},
        )


@admin.register(CreditGrant)
class CreditGrantAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = ["public_id", "wallet", "name", "source", "amount", "priority", "expires_at", "project"]
    list_filter = [ProjectListFilter, "source"]
    search_fields = ["public_id", "name", "wallet__customer__name", "wallet__customer__external_id"]
    list_select_related = ["wallet__customer", "project"]
    inlines = [CreditEntryInline]
    readonly_fields = [
        "public_id",
        "wallet",
        "name",
        "source",
        "amount",
        "priority",
        "expires_at",
        "invoice",
        "available_at",
        "voided_at",
        "created_at",
    ]
    fields = readonly_fields
