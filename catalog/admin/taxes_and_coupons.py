"""Tax rates and coupons."""

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db.models import Count

from billing_site import formats
from billing_site.admin import ProjectListFilter, ProjectScopedAdmin, ReadOnlyInline
from billing_site.admin_display import EMPTY, locale_of, quantity_text
from billing_site.errors import DomainError
from catalog import coupons, taxes
from catalog.admin.common import ArchiveActionsMixin, ArchivedListFilter, ReadOnlyDisplays, form_error
from catalog.models import (
    Coupon,
    CouponDuration,
    CouponKind,
    CouponRedemption,
    TaxRate,
)


class TaxRateForm(forms.ModelForm):
    class Meta:
        model = TaxRate
        fields = ["project", "name", "percentage", "inclusive", "jurisdiction", "is_default"]

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None and cleaned.get("percentage") is not None:
            try:
                taxes.clean_percentage(str(cleaned["percentage"]))
            except DomainError as error:
                form_error(self, error)
        return cleaned


@admin.register(TaxRate)
class TaxRateAdmin(ReadOnlyDisplays, ArchiveActionsMixin, ProjectScopedAdmin):
    """Percentage and inclusiveness are fixed once created (invoices name the rate): archive it and
    create another to change them."""

    form = TaxRateForm
    list_display = [
        "name",
        "percentage_label",
        "inclusive",
        "jurisdiction",
        "is_default",
        "archived_at",
        "project",
    ]
    list_filter = [ProjectListFilter, ArchivedListFilter, "is_default", "inclusive"]
    search_fields = ["name", "jurisdiction", "public_id"]
    readonly_fields = ["public_id", "created_at", "archived_at", "audit_trail"]
    actions = ["archive"]
    fields = [*TaxRateForm.Meta.fields, *readonly_fields]
    read_only_displays = {"percentage": "percentage_label"}

    @admin.display(description="percentage", ordering="percentage")
    def percentage_label(self, rate):
        return f"{quantity_text(rate, rate.percentage)} %"

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return [*fields, "percentage", "inclusive"] if obj is not None else fields

    def save_model(self, request, obj, form, change):
        """Through the services, so the audit trail and tax_rate.* events are kept."""
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            taxes.tax_rate_update(tax_rate=obj, changes=changes, actor=request.user)
        else:
            fields = {name: value for name, value in form.cleaned_data.items() if name != "project"}
            fields["percentage"] = str(fields["percentage"])
            obj.pk = taxes.tax_rate_create(
                project=form.cleaned_data["project"], actor=request.user, **fields
            ).pk

    def archive_object(self, rate, *, actor):
        taxes.tax_rate_archive(tax_rate=rate, actor=actor)


class CouponForm(forms.ModelForm):
    class Meta:
        model = Coupon
        fields = [
            "project",
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
            "redeem_by",
        ]
        help_texts = {"amount_off": 'Fixed amounts by currency: {"USD": "10.00", "EUR": "9.00"}.'}

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None and "kind" in cleaned:
            percent = cleaned.get("percent_off")
            try:
                coupons.clean_discount(
                    cleaned["kind"],
                    None if percent is None else str(percent),
                    cleaned.get("amount_off") or {},
                    cleaned.get("duration"),
                    cleaned.get("duration_periods"),
                )
            except DomainError as error:
                form_error(self, error)
        project = cleaned.get("project") or getattr(self.instance, "project", None)
        for name, owner in (("plans", "project_id"), ("charges", "plan__project_id")):
            chosen = cleaned.get(name)
            if project is not None and chosen is not None and chosen.exclude(**{owner: project.pk}).exists():
                self.add_error(name, "This belongs to another project.")
        return cleaned


class CouponRedemptionInline(ReadOnlyInline):
    """Read-only: coupons are applied through the customer's page or the API (POST/DELETE
    /v1/customers/{id}/coupons), which check the coupon's limits."""

    model = CouponRedemption
    fields = ["public_id", "customer", "subscription", "created_at", "removed_at"]
    readonly_fields = fields


@admin.register(Coupon)
class CouponAdmin(ReadOnlyDisplays, ArchiveActionsMixin, ProjectScopedAdmin):
    """The discount and its duration are fixed once created; name, redeem_by and max_redemptions
    change."""

    form = CouponForm
    list_display = [
        "name",
        "code",
        "discount",
        "duration_label",
        "redemption_count",
        "archived_at",
        "project",
    ]
    list_filter = [ProjectListFilter, ArchivedListFilter, "kind", "duration"]
    search_fields = ["name", "code", "public_id"]
    readonly_fields = ["public_id", "created_at", "archived_at", "audit_trail"]
    inlines = [CouponRedemptionInline]
    actions = ["archive"]
    fields = [*CouponForm.Meta.fields, *readonly_fields]
    read_only_displays = {"percent_off": "percent_off_label", "amount_off": "amount_off_label"}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(redemption_total=Count("redemptions"))

    @admin.display(description="discount")
    def discount(self, coupon):
        if coupon.kind == CouponKind.PERCENTAGE:
            return self.percent_off_label(coupon)
        return self.amount_off_label(coupon)

    @admin.display(description="percent off")
    def percent_off_label(self, coupon):
        return EMPTY if coupon.percent_off is None else f"{quantity_text(coupon, coupon.percent_off)} %"

    @admin.display(description="amount off")
    def amount_off_label(self, coupon):
        """Each currency's amount as the project writes money: "10,00 €"."""
        locale = locale_of(coupon)
        amounts = sorted((coupon.amount_off or {}).items())
        return (
            ", ".join(formats.money(Decimal(amount), currency, locale) for currency, amount in amounts)
            or EMPTY
        )

    @admin.display(description="duration", ordering="duration")
    def duration_label(self, coupon):
        if coupon.duration == CouponDuration.REPEATING:
            return f"{coupon.duration_periods} periods"
        return coupon.get_duration_display()

    @admin.display(description="redemptions", ordering="redemption_total")
    def redemption_count(self, coupon):
        total = coupon.redemption_total
        return f"{total} / {coupon.max_redemptions}" if coupon.max_redemptions else str(total)

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None:
            fixed = ["code", "kind", "percent_off", "amount_off", "duration", "duration_periods"]
            return [*fields, *fixed, "plans", "charges"]
        return fields

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name in ("plans", "charges") and not request.user.is_superuser:
            writable = self._writable(request)
            path = "project__in" if db_field.name == "plans" else "plan__project__in"
            kwargs["queryset"] = db_field.related_model.objects.filter(**{path: writable})
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        """Through the services, so the audit trail and coupon.* events are kept."""
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            coupons.coupon_update(coupon=obj, changes=changes, actor=request.user)
        else:
            fields = {name: value for name, value in form.cleaned_data.items() if name != "project"}
            if fields["percent_off"] is not None:
                fields["percent_off"] = str(fields["percent_off"])
            fields["amount_off"] = fields["amount_off"] or {}
            obj.pk = coupons.coupon_create(
                project=form.cleaned_data["project"], actor=request.user, **fields
            ).pk

    def save_related(self, request, form, formsets, change):
        form.save_m2m = lambda: None  # the service set plans and charges
        super().save_related(request, form, formsets, change)

    def archive_object(self, coupon, *, actor):
        coupons.coupon_archive(coupon=coupon, actor=actor)
