"""Customers: their billing details as fields, and what they are billed, read-only, on their page."""

from django import forms
from django.contrib import admin
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst

from billing_site.admin import ObjectActionsMixin, ProjectListFilter, ProjectScopedAdmin
from catalog import coupons, services
from catalog.admin.common import tax_rates_offered
from catalog.forms import EmailListField
from catalog.models import (
    Coupon,
    Customer,
)
from meters.admin import customer_usage_panel
from subscriptions.models import Subscription


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    fields = ["link", "plan", "starts_at", "ends_at", "current_period_end"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="subscription")
    def link(self, subscription):
        url = reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
        return format_html('<a href="{}">{} ({})</a>', url, subscription.public_id, subscription.status)


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
class CustomerAdmin(ObjectActionsMixin, ProjectScopedAdmin):
    list_display = ["name", "email", "external_id", "currency", "timezone", "created_at", "project"]
    list_filter = [ProjectListFilter, "currency", "invoice_delivery"]
    search_fields = ["name", "email", "external_id", "public_id"]
    change_form_template = "admin/catalog/customer/change_form.html"
    readonly_fields = [
        "public_id",
        "created_at",
        "updated_at",
        "coupons_applied",
        "usage_this_period",
        "audit_trail",
    ]
    inlines = [SubscriptionInline]
    fieldsets = [
        (None, {"fields": ["project", "public_id", "external_id", "name", "email"]}),
        (
            "Billing",
            {
                "fields": [
                    "currency",
                    "timezone",
                    "locale",
                    "billing_address",
                    "tax_id",
                    "tax_status",
                    "tax_rates",
                    "coupons_applied",
                    "invoice_delivery",
                    "processor_customer_id",
                ]
            },
        ),
        ("Invoice emails", {"fields": ["invoice_emails", "invoice_cc"]}),
        ("Usage this period", {"fields": ["usage_this_period"]}),
        ("Other", {"fields": ["metadata", "created_at", "updated_at", "audit_trail"]}),
    ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in ("invoice_emails", "invoice_cc"):
            return EmailListField(label=capfirst(db_field.verbose_name), help_text=db_field.help_text)
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

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["may_act"] = self.may_act(request, obj)
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

    @admin.display(description="usage")
    def usage_this_period(self, customer):
        return customer_usage_panel(customer) if customer.pk else "-"

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
