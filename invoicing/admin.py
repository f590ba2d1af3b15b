"""The finance back office: the review queue, invoice pages, their PDFs and the email log.

Invoices are never edited as forms. Staff act on them through explicit buttons (approve, reject,
add an adjustment, void, mark uncollectible, credit, send again) that call the same services as the
API, so every action is audited and emits its event (billing_site.admin.ObjectActionsMixin).
`billing_admin` and `owner` may act; `viewer` reads, which includes downloading PDFs and previewing
the email. Payments are shown and recorded on the invoice's page by payments/admin.py.

The list works in bulk through the same services, invoice by invoice (approve, reject, void, send
again), and exports as CSV (invoicing/admin_exports.py; viewers too). Its filters are query
parameters other pages link to (invoicing/admin_filters.py). Every amount, price and quantity reads
as the project writes money (billing_site.admin_display).
"""

from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from billing_site import formats
from billing_site.admin import (
    CappedPaginator,
    ObjectActionsMixin,
    ProjectListFilter,
    ProjectScopedAdmin,
    ReadOnlyAdminMixin,
    ReadOnlyInline,
)
from billing_site.admin_display import (
    locale_of,
    money_column,
    money_text,
    price_column,
    price_text,
    quantity_column,
    quantity_text,
)
from billing_site.downloads import pdf_response
from billing_site.errors import DomainError
from invoicing import credits, services
from invoicing.admin_exports import invoice_lines_csv, invoices_csv
from invoicing.admin_filters import (
    AmountDueFilter,
    CustomerFilter,
    IssuedMonthFilter,
    OverdueFilter,
    PeriodMonthFilter,
)
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
from invoicing.selectors import BACK_OFFICE_ORDER, invoices_for_back_office

# The paths from an invoice line to what formats its money (billing_site.admin_display).
LINE_MONEY = {"currency": "invoice__currency", "project": "invoice__project"}


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


class AdjustmentForm(forms.Form):
    description = forms.CharField(max_length=300, help_text="As the customer will read it on the invoice.")
    amount = forms.DecimalField()
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)

    def __init__(self, data=None, *, invoice: Invoice):
        super().__init__(data)
        self.fields["amount"].label = f"Amount ({invoice.currency})"
        self.fields[
            "amount"
        ].help_text = f"Negative for a credit. The total is {money_text(invoice, invoice.total)} now."


class CreditNoteForm(forms.Form):
    reason = forms.ChoiceField(choices=CreditNoteReason.choices)
    amount = forms.DecimalField(required=False)
    memo = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, data=None, *, invoice: Invoice):
        super().__init__(data)
        self.fields["amount"].label = f"Amount ({invoice.currency})"
        self.fields[
            "amount"
        ].help_text = f"Leave empty to credit the whole invoice ({money_text(invoice, invoice.total)})."


class LineInline(ReadOnlyInline):
    model = InvoiceLine
    fk_name = "invoice"
    fields = [
        "type",
        "description",
        "period",
        "line_quantity",
        "line_unit_price",
        "line_amount",
        "breakdown",
        "usage",
    ]
    readonly_fields = fields
    # Named apart from the payments' "amount_label" shown on the same page.
    line_quantity = quantity_column("quantity", project="invoice__project")
    line_unit_price = price_column("unit_price", description="unit price", **LINE_MONEY)
    line_amount = money_column("amount", **LINE_MONEY)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice__project", "invoice__customer")

    @admin.display(description="period")
    def period(self, line):
        """The days the line covers, as the invoice's period column and its PDF show them."""
        invoice = line.invoice
        return formats.compact_period(
            line.period_start, line.period_end, invoice.customer.timezone, locale_of(invoice)
        )

    @admin.display(description="tier breakdown")
    def breakdown(self, line):
        """Each tier as units × unit price + flat fee = amount (unrounded, as rated)."""
        if not line.tiers and not line.reason:
            return "-"
        rows = format_html_join(
            "",
            "<li>tier {}: {} × {} + {} = {}</li>",
            (
                (
                    tier["tier"],
                    quantity_text(line, tier["units"], project="invoice__project"),
                    price_text(line, tier["unit_price"], **LINE_MONEY),
                    price_text(line, tier["flat_fee"], **LINE_MONEY),
                    price_text(line, tier["amount"], **LINE_MONEY),
                )
                for tier in line.tiers
            ),
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


def period_text(invoice: Invoice) -> str:
    """The days the invoice bills, in its customer's time zone: "Nov 1 – 30, 2026"."""
    return formats.compact_period(
        invoice.billed_start, invoice.billed_end, invoice.customer.timezone, locale_of(invoice)
    )


def invoice_label(invoice: Invoice) -> str:
    """Its number once issued; before that (and if rejected in review, never numbered) what it is,
    for whom and for when: "Draft · Initech · Nov 1 – 30, 2026"."""
    if invoice.number:
        return invoice.number
    return f"{invoice.get_status_display()} · {invoice.customer.name} · {period_text(invoice)}"


@admin.register(Invoice)
class InvoiceAdmin(ObjectActionsMixin, ReadOnlyAdminMixin, ProjectScopedAdmin):
    # Compact enough for the project to show at 1440 px with both sidebars open: the amount due is on
    # the page, the issue date without its time, names as text that wraps.
    list_display = [
        "label",
        "customer_name",
        "status",
        "period_label",
        "total_label",
        "change",
        "issued_label",
        "project_name",
    ]
    list_filter = [
        ProjectListFilter,
        "status",
        "billing_reason",
        "currency",
        PeriodMonthFilter,
        IssuedMonthFilter,
        CustomerFilter,
        AmountDueFilter,
        OverdueFilter,
    ]
    search_fields = ["number", "public_id", "customer__name", "customer__email", "customer__external_id"]
    list_select_related = ["customer", "project"]
    ordering = BACK_OFFICE_ORDER
    paginator = CappedPaginator
    show_full_result_count = False
    inlines = [LineInline, EmailInline]
    actions = [
        "approve_selected",
        "reject_selected",
        "void_selected",
        "send_selected",
        "export_selected_csv",
        "export_lines_csv",
    ]
    change_form_template = "admin/invoicing/invoice/change_form.html"
    change_list_template = "admin/invoicing/invoice/change_list.html"
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
        "amount_credited_label",
        "amount_paid_label",
        "amount_due_label",
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
        return invoices_for_back_office(super().get_queryset(request))

    def changelist_view(self, request, extra_context=None):
        drafts_freshen(self.get_queryset(request))  # drafts show the usage accepted until now
        opts = self.model._meta
        exports = {
            "export_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_export"),
            "export_lines_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_export_lines"),
        }
        return super().changelist_view(request, {**exports, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if str(object_id).isdigit():
            drafts_freshen(self.get_queryset(request).filter(pk=object_id))
        return super().change_view(request, object_id, form_url, extra_context)

    # --- what a finance person reads ------------------------------------------------------------
    @admin.display(description="invoice", ordering="number")
    def label(self, invoice):
        if invoice.number:  # ACME-000042 in one piece; a draft's longer label wraps
            return format_html('<span style="white-space:nowrap">{}</span>', invoice.number)
        return invoice_label(invoice)

    # Django keeps a foreign key's cell on one line: the names are shown as text, which wraps.
    @admin.display(description="customer", ordering="customer__name")
    def customer_name(self, invoice):
        return invoice.customer.name

    @admin.display(description="project", ordering="project__name")
    def project_name(self, invoice):
        return invoice.project.name

    @admin.display(description="period", ordering="period_start")
    def period_label(self, invoice):
        return format_html('<span style="white-space:nowrap">{}</span>', period_text(invoice))

    @admin.display(description="issued", ordering="issued_at")
    def issued_label(self, invoice):
        if invoice.issued_at is None:
            return "-"
        return formats.day(invoice.issued_at, invoice.customer.timezone, locale_of(invoice))

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
        return " · ".join(f"{name} {money_text(invoice, amount)}" for name, amount in steps)

    total_label = money_column("total")
    amount_credited_label = money_column("amount_credited", description="credited")
    amount_paid_label = money_column("amount_paid", description="paid")

    @admin.display(description="due")
    def amount_due_label(self, invoice):
        return money_text(invoice, invoice.amount_due)

    @admin.display(description="vs previous")
    def change(self, invoice):
        """Against the previous like invoice only (selectors.invoices_for_back_office): the same
        billing reason over a period as long; else a dash that says why."""
        previous = invoice.previous_total
        if previous is None:
            if invoice.subscription_id is None:
                why, short = "A purchase of prepaid credits.", ""
            elif not invoice.has_previous:
                why, short = "The subscription's first invoice.", "first"
            else:
                why, short = (
                    "No earlier invoice of this subscription bills the same kind of period for as long "
                    "(an opening or prorated period does not compare with a whole one).",
                    "no like period",
                )
            return format_html('<span title="{}">— {}</span>', why, short)
        if previous == 0:
            return "—" if invoice.total == 0 else "new charges"
        difference = invoice.total - previous
        percent = difference / previous * 100
        return f"{'+' if difference >= 0 else ''}{money_text(invoice, difference)} ({percent:+.0f} %)"

    @admin.display(description="reviewed")
    def reviewed_label(self, invoice):
        if not invoice.reviewed_at:
            return "-"
        return f"{invoice.reviewed_at:%Y-%m-%d %H:%M} by {invoice.reviewed_by or 'API key'}"

    @admin.display(description="credit notes")
    def credit_notes_list(self, invoice):
        notes = invoice.credit_notes.all()
        return (
            format_html_join(", ", "{} ({})", ((n.number, money_text(invoice, n.amount)) for n in notes))
            or "-"
        )

    # --- actions on one invoice -----------------------------------------------------------------
    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_act"] = self.may_act(request, obj)
            context["invoice"] = obj
            # A voided invoice is not emailed again; its PDF stays available (marked VOID when it
            # was rejected in review and so never issued).
            context["may_preview_email"] = obj.status != InvoiceStatus.VOID
            context["may_send"] = obj.status in ISSUED_STATUSES
            context["subtitle"] = invoice_label(obj)  # the heading and the breadcrumbs
        return super().render_change_form(request, context, add, change, form_url, obj)

    def object_label(self, invoice):
        return invoice_label(invoice)

    def _form_page(self, request, invoice, form, title, button):
        response = super()._form_page(request, invoice, form, title, button)
        response.context_data["summary"] = " · ".join(
            [
                invoice_label(invoice),
                invoice.customer.name,
                period_text(invoice),
                f"total {money_text(invoice, invoice.total)}",
                f"due {money_text(invoice, invoice.amount_due)}",
            ]
        )
        return response

    def export_urls(self):
        """The whole list as the filters and the search leave it, as CSV (also the review queue's)."""
        opts = self.model._meta
        return [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_view),
                name=f"{opts.app_label}_{opts.model_name}_export",
            ),
            path(
                "export-lines.csv",
                self.admin_site.admin_view(self.export_lines_view),
                name=f"{opts.app_label}_{opts.model_name}_export_lines",
            ),
        ]

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
            *self.export_urls(),
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
            "title": f"Email of {invoice_label(invoice)}",
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
            form_kwargs=lambda invoice: {"invoice": invoice},
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
            form_kwargs=lambda invoice: {"invoice": invoice},
        )

    # --- bulk actions ---------------------------------------------------------------------------
    # The same services as the buttons, invoice by invoice: what one refuses is reported by name and
    # the others go ahead. Invoices of projects where the user only reads are left out before
    # (ProjectScopedAdmin.get_actions).
    def _each(self, request, queryset, act, done: str) -> None:
        succeeded = 0
        for invoice in queryset:
            try:
                act(invoice)
            except DomainError as exc:
                messages.error(request, f"{invoice_label(invoice)}: {exc.message}")
            else:
                succeeded += 1
        messages.success(request, done.format(count=succeeded))

    def _with_reason(
        self, request, queryset, act, *, action: str, title: str, intro: str, button: str, done: str
    ):
        """Asks once for the reason that every selected invoice will carry, listing them."""
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            self._each(request, queryset, lambda invoice: act(invoice, reason), done)
            return None
        rows = [
            {
                "pk": invoice.pk,
                "label": invoice_label(invoice),
                "customer": invoice.customer.name,
                "status": invoice.get_status_display(),
                "total": money_text(invoice, invoice.total),
            }
            for invoice in queryset
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "intro": intro,
            "button": button,
            "form": form,
            "invoices": rows,
            "opts": self.model._meta,
            "action": action,
        }
        return TemplateResponse(request, "admin/invoicing/invoice/reason_selected.html", context)

    @admin.action(description="Approve selected invoices", permissions=["act"])
    def approve_selected(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda invoice: services.invoice_approve(invoice=invoice, actor=request.user),
            "Approved {count} invoice(s).",
        )

    @admin.action(description="Reject selected invoices…", permissions=["act"])
    def reject_selected(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            lambda invoice, reason: services.invoice_reject(
                invoice=invoice, actor=request.user, reason=reason
            ),
            action="reject_selected",
            title="Reject invoices",
            intro="Reject these invoices? They become void and are never numbered. "
            "The reason is kept with each.",
            button="Reject",
            done="Rejected {count} invoice(s).",
        )

    @admin.action(description="Void selected invoices…", permissions=["act"])
    def void_selected(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            lambda invoice, reason: services.invoice_void(invoice=invoice, actor=request.user, reason=reason),
            action="void_selected",
            title="Void invoices",
            intro="Void these invoices? Nothing is owed on them any more; only open invoices can be voided "
            "(a paid one takes a credit note). The reason is kept with each.",
            button="Void invoices",
            done="Voided {count} invoice(s).",
        )

    @admin.action(description="Send selected invoices again", permissions=["act"])
    def send_selected(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda invoice: invoice_email_resend(invoice=invoice, actor=request.user),
            "Queued {count} email(s).",
        )

    def has_act_permission(self, request) -> bool:
        return self.may_act(request)

    # --- CSV (viewers may export: it is reading) ------------------------------------------------
    @admin.action(description="Export selected to CSV")
    def export_selected_csv(self, request, queryset):
        return invoices_csv(queryset)

    @admin.action(description="Export lines of selected to CSV")
    def export_lines_csv(self, request, queryset):
        return invoice_lines_csv(queryset)

    def _listed(self, request):
        """The invoices the list page shows for this query string, all pages."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        drafts_freshen(self.get_queryset(request))
        return self.get_changelist_instance(request).get_queryset(request)

    def export_view(self, request):
        try:
            return invoices_csv(self._listed(request))
        except IncorrectLookupParameters:
            return self._bad_filters()

    def export_lines_view(self, request):
        try:
            return invoice_lines_csv(self._listed(request))
        except IncorrectLookupParameters:
            return self._bad_filters()

    def _bad_filters(self):
        opts = self.model._meta
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist") + "?e=1")


@admin.register(PendingReviewInvoice)
class PendingReviewAdmin(InvoiceAdmin):
    """The daily queue: invoices whose period is over, held for approval."""

    list_display = ["label", "customer_name", "period_label", "total_label", "change", "project_name"]
    list_filter = [ProjectListFilter, "currency", PeriodMonthFilter, CustomerFilter, AmountDueFilter]
    actions = ["approve_selected", "reject_selected", "export_selected_csv", "export_lines_csv"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=InvoiceStatus.PENDING_REVIEW)

    def get_urls(self):
        return [*self.export_urls(), *admin.ModelAdmin.get_urls(self)]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[object_id]))


# The paths from a credit note to what formats its money.
NOTE_MONEY = {"currency": "invoice__currency"}


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    change_form_template = "admin/invoicing/creditnote/change_form.html"
    list_display = [
        "number",
        "invoice",
        "reason",
        "amount_label",
        "refund_owed_label",
        "created_at",
        "created_by",
        "project",
    ]
    list_filter = [ProjectListFilter, "reason"]
    search_fields = ["number", "public_id", "invoice__number", "invoice__customer__name"]
    list_select_related = ["invoice", "created_by", "project"]
    readonly_fields = [
        "public_id",
        "number",
        "invoice",
        "reason",
        "memo",
        "amount_label",
        "amount_credited_label",
        "credits_returned_label",
        "refund_owed_label",
        "created_at",
        "created_by",
    ]
    amount_label = money_column("amount", **NOTE_MONEY)
    amount_credited_label = money_column("amount_credited", description="amount credited", **NOTE_MONEY)
    credits_returned_label = money_column("credits_returned", description="credits returned", **NOTE_MONEY)
    refund_owed_label = money_column("refund_owed", description="refund owed", **NOTE_MONEY)

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


# The paths from a grant and from a ledger entry to what formats their money.
GRANT_MONEY = {"currency": "wallet__currency"}
ENTRY_MONEY = {"currency": "grant__wallet__currency"}


class CreditGrantInline(ReadOnlyInline):
    model = CreditGrant
    fields = [
        "public_id", "name", "source", "amount_label", "priority", "expires_at", "available_at", "voided_at",
    ]  # fmt: skip
    readonly_fields = fields
    ordering = ["priority", "expires_at", "id"]
    amount_label = money_column("amount", **GRANT_MONEY)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("wallet", "project")


class CreditEntryInline(ReadOnlyInline):
    """The wallet's ledger, newest first."""

    model = CreditEntry
    fk_name = "grant"
    fields = ["created_at", "kind", "amount_label", "invoice"]
    readonly_fields = fields
    amount_label = money_column("amount", **ENTRY_MONEY)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("grant__wallet", "project", "invoice")


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
        return money_text(wallet, credits.wallet_balance(wallet=wallet, at=timezone.now()))

    @admin.display(description="low-balance threshold")
    def threshold_label(self, wallet):
        return money_text(wallet, wallet.low_balance_threshold)

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
                    money_text(wallet, entry.amount),
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
    list_display = [
        "public_id",
        "wallet",
        "name",
        "source",
        "amount_label",
        "priority",
        "expires_at",
        "project",
    ]
    list_filter = [ProjectListFilter, "source"]
    search_fields = ["public_id", "name", "wallet__customer__name", "wallet__customer__external_id"]
    list_select_related = ["wallet__customer", "project"]
    inlines = [CreditEntryInline]
    readonly_fields = [
        "public_id",
        "wallet",
        "name",
        "source",
        "amount_label",
        "priority",
        "expires_at",
        "invoice",
        "available_at",
        "voided_at",
        "created_at",
    ]
    fields = readonly_fields
    amount_label = money_column("amount", **GRANT_MONEY)
