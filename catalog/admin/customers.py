"""Customers: their billing details as fields, and what they are billed, read-only, on their page."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst

from billing_site import formats
from billing_site.admin import ObjectActionsMixin, ProjectListFilter, ProjectScopedAdmin
from billing_site.admin_display import EMPTY, locale_of, money_text
from catalog import coupons, services
from catalog.admin.common import ReadOnlyDisplays, metadata_lines, tax_rates_offered
from catalog.forms import CustomerForm, EmailListField, MetadataField
from catalog.models import (
    Coupon,
    Customer,
)
from catalog.services import ADDRESS_FIELDS
from invoicing import selectors as invoicing_selectors
from meters.admin import customer_usage_panel
from payments import selectors as payment_selectors
from subscriptions import selectors as subscription_selectors
from subscriptions.models import Subscription


@dataclass(frozen=True)
class Section:
    """A read-only table below the customer's form: the latest rows, and a link to all of them."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    empty: str
    all_url: str = ""
    all_label: str = ""


def _link(url: str, text: Any) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, text)


def _change_url(obj: Any) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def _changelist_url(name: str, **query: Any) -> str:
    return f"{reverse(f'admin:{name}_changelist')}?{urlencode(query)}"


class CustomerPage:
    """What the customer is billed, as its page shows it: amounts in their currency and dates and
    periods in the customer's time zone, written as the project writes them. One query per section."""

    def __init__(self, customer: Customer):
        self.customer = customer
        self.locale = locale_of(customer)

    def day(self, moment: datetime | None) -> str:
        return formats.day(moment, self.customer.timezone, self.locale) if moment else EMPTY

    def period(self, start: datetime, end: datetime) -> str:
        return formats.compact_period(start, end, self.customer.timezone, self.locale)

    def sections(self) -> list[Section]:
        return [
            self.subscriptions(),
            self.invoices(),
            self.credit_notes(),
            self.payments(),
            self.payment_methods(),
        ]

    def subscriptions(self) -> Section:
        rows = [
            (
                _link(_change_url(subscription), subscription.public_id),
                _link(_change_url(subscription.plan), subscription.plan),
                subscription.status.label,
                self.period(subscription.current_period_start, subscription.current_period_end),
                self.day(subscription.starts_at),
                self.day(subscription.ends_at),
            )
            for subscription in subscription_selectors.customer_subscription_list(customer=self.customer)
        ]
        return Section(
            "Subscriptions",
            ("subscription", "plan", "status", "current period", "started", "ends"),
            rows,
            "No subscription.",
            _changelist_url("subscriptions_subscription", customer__id__exact=self.customer.pk),
            "All subscriptions of this customer",
        )

    def invoices(self) -> Section:
        rows = [
            (
                _link(_change_url(invoice), invoice.number or "Draft"),
                invoice.get_status_display(),
                self.period(invoice.billed_start, invoice.billed_end),
                money_text(invoice, invoice.total),
                money_text(invoice, invoice.amount_due),
            )
            for invoice in invoicing_selectors.customer_invoice_list(customer=self.customer)
        ]
        return Section(
            "Invoices",
            ("invoice", "status", "period", "total", "amount due"),
            rows,
            "No invoice.",
            _changelist_url("invoicing_invoice", customer=self.customer.public_id),
            "All invoices of this customer",
        )

    def credit_notes(self) -> Section:
        rows = [
            (
                _link(_change_url(note), note.number),
                _link(_change_url(note.invoice), note.invoice),
                money_text(note, note.amount, currency="invoice__currency"),
                self.day(note.created_at),
            )
            for note in invoicing_selectors.customer_credit_note_list(customer=self.customer)
        ]
        return Section(
            "Credit notes", ("credit note", "invoice", "amount", "created"), rows, "No credit note."
        )

    def payments(self) -> Section:
        rows = [
            (
                _link(_change_url(payment), payment.public_id),
                _link(_change_url(payment.invoice), payment.invoice) if payment.invoice else EMPTY,
                payment.get_status_display(),
                money_text(payment, payment.amount),
                payment.method or (str(payment.payment_method) if payment.payment_method else EMPTY),
                self.day(payment.paid_at),
            )
            for payment in payment_selectors.customer_payment_list(customer=self.customer)
        ]
        return Section(
            "Payments",
            ("payment", "invoice", "status", "amount", "method", "paid at"),
            rows,
            "No payment.",
            _changelist_url("payments_payment", customer__id__exact=self.customer.pk),
            "All payments of this customer",
        )

    def payment_methods(self) -> Section:
        rows = [
            (
                _link(_change_url(method), method),
                method.type,
                f"{method.exp_month:02d}/{method.exp_year}"
                if method.exp_month and method.exp_year
                else EMPTY,
                "default" if method.is_default and not method.detached_at else "",
                f"removed {self.day(method.detached_at)}" if method.detached_at else "",
            )
            for method in payment_selectors.customer_payment_method_list(customer=self.customer)
        ]
        return Section(
            "Payment methods",
            ("payment method", "type", "expires", "default", "removed"),
            rows,
            "No payment method.",
            _changelist_url("payments_paymentmethod", customer__id__exact=self.customer.pk),
            "All payment methods of this customer",
        )


class ApplyCouponForm(forms.Form):
    coupon = forms.ModelChoiceField(
        queryset=Coupon.objects.none(), help_text="Coupons in use (not archived)."
    )
    subscription = forms.ModelChoiceField(
        queryset=Subscription.objects.none(),
        required=False,
        help_text="Empty: every subscription of the customer.",
    )

    def __init__(self, data=None, *, customer: Customer):
        super().__init__(data)
        self.fields["coupon"].queryset = coupons.coupon_list(project=customer.project).filter(
            archived_at__isnull=True
        )
        self.fields["subscription"].queryset = Subscription.objects.filter(customer=customer)


@admin.register(Customer)
class CustomerAdmin(ReadOnlyDisplays, ObjectActionsMixin, ProjectScopedAdmin):
    """A customer's billing details as a form (the address a field per part, metadata as
    `key = value` lines), saved through the services; below it, read-only, what they are billed."""

    form = CustomerForm
    list_display = ["name", "email", "external_id", "currency", "timezone", "created_at", "project"]
    list_filter = [ProjectListFilter, "currency", "invoice_delivery"]
    search_fields = ["name", "email", "external_id", "public_id"]
    change_form_template = "admin/catalog/customer/change_form.html"
    readonly_fields = [
        "public_id",
        "created_at",
        "updated_at",
        "coupons_applied",
        "audit_trail",
    ]
    fieldsets = [
        (None, {"fields": ["project", "public_id", "external_id", "name", "email"]}),
        (
            "Billing",
            {
                "fields": [
                    "currency",
                    "timezone",
                    "locale",
                    "tax_id",
                    "tax_status",
                    "tax_rates",
                    "coupons_applied",
                    "invoice_delivery",
                    "processor_customer_id",
                ]
            },
        ),
        ("Billing address", {"fields": [f"address_{part}" for part in ADDRESS_FIELDS]}),
        ("Invoice emails", {"fields": ["invoice_emails", "invoice_cc"]}),
        ("Other", {"fields": ["metadata", "created_at", "updated_at", "audit_trail"]}),
    ]
    read_only_displays = {
        **{f"address_{part}": "billing_address_text" for part in ADDRESS_FIELDS},
        "metadata": "metadata_text",
        "invoice_emails": "invoice_emails_text",
        "invoice_cc": "invoice_cc_text",
    }

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in ("invoice_emails", "invoice_cc"):
            return EmailListField(label=capfirst(db_field.verbose_name), help_text=db_field.help_text)
        if db_field.name == "metadata":
            return MetadataField()
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "tax_rates":  # rates in use, of the projects the user may write to
            kwargs["queryset"] = tax_rates_offered(self, request)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description="coupons")
    def coupons_applied(self, customer):
        if not customer.pk:
            return "-"
        found = coupons.coupon_redemption_list(customer=customer)
        return format_html_join(
            "", "<div>{} — {}</div>", ((r.coupon, r.subscription or "every subscription") for r in found)
        ) or "-"  # fmt: skip

    @admin.display(description="billing address")
    def billing_address_text(self, customer):
        address = customer.billing_address or {}
        lines = [address.get(part, "") for part in ("line1", "line2")]
        lines.append(" ".join(filter(None, (address.get("postal_code"), address.get("city")))))
        lines += [address.get("state", ""), address.get("country", "")]
        return format_html_join("", "<div>{}</div>", ((line,) for line in lines if line)) or EMPTY

    @admin.display(description="metadata")
    def metadata_text(self, customer):
        return metadata_lines(customer.metadata)

    @admin.display(description="invoice emails")
    def invoice_emails_text(self, customer):
        return ", ".join(customer.invoice_emails) or EMPTY

    @admin.display(description="invoice cc")
    def invoice_cc_text(self, customer):
        return ", ".join(customer.invoice_cc) or EMPTY

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_act"] = self.may_act(request, obj)
            context["sections"] = CustomerPage(obj).sections()
            context["usage_this_period"] = customer_usage_panel(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        apply = path(
            "<int:pk>/coupon/", self.admin_site.admin_view(self.coupon_view), name="catalog_customer_coupon"
        )
        return [apply, *super().get_urls()]

    def coupon_view(self, request, pk):
        return self._form_view(
            request,
            pk,
            ApplyCouponForm,
            lambda customer, data: coupons.coupon_redeem(
                customer=customer,
                coupon=data["coupon"],
                subscription=data["subscription"],
                actor=request.user,
            ),
            success="Coupon applied.",
            title="Apply a coupon to {obj}",
            button="Apply the coupon",
            form_kwargs=lambda customer: {"customer": customer},
        )

    def save_model(self, request, obj, form, change):
        """Through the services, so the audit trail and customer.created/updated events are kept."""
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            services.customer_update(customer=obj, changes=changes, actor=request.user)
        else:
            fields = {name: value for name, value in form.cleaned_data.items() if name != "project"}
            obj.pk = services.customer_create(
                project=form.cleaned_data["project"], actor=request.user, **fields
            ).pk

    def save_related(self, request, form, formsets, change):
        # The service set the tax rates (and recorded them); saving the form's m2m again is a no-op
        # for them, but would skip the audit trail if it were the only writer.
        form.save_m2m = lambda: None
        super().save_related(request, form, formsets, change)
