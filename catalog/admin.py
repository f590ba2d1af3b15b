from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Exists, OuterRef
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst

from billing_site.admin import ObjectActionsMixin, ProjectListFilter, ProjectScopedAdmin, ProjectScopedInline
from billing_site.errors import DomainError
from billing_site.formats import money
from catalog import coupons, services, taxes
from catalog.forms import ContractForm, EmailListField, PricedItemForm
from catalog.models import (
    Charge,
    Contract,
    ContractLine,
    ContractStatus,
    Coupon,
    CouponDuration,
    CouponKind,
    CouponRedemption,
    Customer,
    Plan,
    Product,
    TaxRate,
)
from catalog.selectors import plan_in_use
from meters.admin import customer_usage_panel
from subscriptions.models import Subscription

PRICING_LAYOUT = [
    ("kind", "name", "meter"),
    ("pricing_model", "unit_price", "timing"),
    "tiers",
    ("package_size", "package_rounding"),
    ("percentage_rate", "fixed_fee_per_event", "min_fee_per_event", "max_fee_per_event"),
    ("free_units", "minimum_amount", "free_amount"),
    ("overage_unit_price", "bill_flat_fee_at_zero"),
    ("prorate", "amount_property"),
]


class ArchivedListFilter(admin.SimpleListFilter):
    title = "archived"
    parameter_name = "archived"

    def lookups(self, request, model_admin):
        return [("no", "Active"), ("yes", "Archived")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(archived_at__isnull=self.value() == "no")
        return queryset


class ArchiveActionsMixin:
    """Archived objects are read-only; the archive action hides objects from new use."""

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.archived_at is not None:
            return False
        return super().has_change_permission(request, obj)

    @admin.action(description="Archive selected", permissions=["change"])
    def archive(self, request, queryset):
        for obj in queryset:
            self.archive_object(obj, actor=request.user)
        messages.success(request, f"Archived {queryset.count()}.")


@admin.register(Product)
class ProductAdmin(ArchiveActionsMixin, ProjectScopedAdmin):
    list_display = ["name", "code", "public_id", "plan_count", "archived_at", "project"]
    list_filter = [ProjectListFilter, ArchivedListFilter]
    search_fields = ["name", "code", "public_id"]
    readonly_fields = ["public_id", "created_at", "archived_at"]
    actions = ["archive"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(plan_total=Count("plans"))

    @admin.display(description="plans", ordering="plan_total")
    def plan_count(self, product):
        return product.plan_total

    def archive_object(self, product, *, actor):
        services.product_archive(product=product, actor=actor)


class ChargeInline(ProjectScopedInline):
    model = Charge
    form = PricedItemForm
    extra = 0
    fields = PRICING_LAYOUT
    show_change_link = False


@admin.register(Plan)
class PlanAdmin(ArchiveActionsMixin, ProjectScopedAdmin):
    """Plans and their charges. A plan subscriptions use is read-only here: its prices change
    through a new version (the "Create new version" action), which subscriptions move to."""

    list_display = [
        "name",
        "code",
        "version",
        "product",
        "currency",
        "interval_label",
        "base_fee",
        "state",
        "project",
    ]
    list_filter = [
        ProjectListFilter,
        "currency",
        "interval",
        "is_private",
        ArchivedListFilter,
        ("product", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["name", "code", "public_id"]
    readonly_fields = [
        "public_id",
        "version",
        "previous_version",
        "created_at",
        "archived_at",
        "used_by",
        "audit_trail",
    ]
    inlines = [ChargeInline]
    actions = ["archive", "new_version"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "project",
                    "product",
                    "code",
                    "name",
                    "description",
                    "public_id",
                    "version",
                    "previous_version",
                ]
            },
        ),
        (
            "Billing",
            {
                "fields": [
                    "currency",
                    ("interval", "interval_count"),
                    "trial_days",
                    "bill_usage_during_trial",
                    ("base_fee", "base_fee_timing"),
                    "minimum_commitment",
                    "tax_rates",
                ]
            },
        ),
        ("Entitlements", {"fields": ["entitlements"]}),
        ("Use", {"fields": ["is_private", "used_by", "created_at", "archived_at", "audit_trail"]}),
    ]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "tax_rates":  # rates in use, of the projects the user may write to
            kwargs["queryset"] = _tax_rates_offered(self, request)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_queryset(self, request):
        newer = Plan.objects.filter(previous_version=OuterRef("pk"))
        return super().get_queryset(request).select_related("product").annotate(superseded=Exists(newer))

    @admin.display(description="interval")
    def interval_label(self, plan):
        return f"every {plan.interval_count} {plan.interval}s" if plan.interval_count > 1 else plan.interval

    @admin.display(description="state")
    def state(self, plan):
        if plan.archived_at:
            return "archived"
        return "superseded" if getattr(plan, "superseded", False) else "current"

    @admin.display(description="subscriptions")
    def used_by(self, plan):
        count = Subscription.objects.filter(phases__plan=plan).distinct().count()
        url = reverse("admin:subscriptions_subscription_changelist") + f"?plan__id__exact={plan.pk}"
        return format_html('<a href="{}">{} subscription(s)</a>', url, count)

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and plan_in_use(obj):
            return False
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return [*self.readonly_fields, "project", "code"]
        return self.readonly_fields

    def archive_object(self, plan, *, actor):
        services.plan_archive(plan=plan, actor=actor)

    @admin.action(description="Create new version (to change prices of a plan in use)", permissions=["add"])
    def new_version(self, request, queryset):
        for plan in queryset:
            try:
                successor = services.plan_new_version(plan=plan, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"{plan}: {exc.message}")
                continue
            url = reverse("admin:catalog_plan_change", args=[successor.pk])
            messages.success(
                request,
                format_html(
                    'Created <a href="{}">{}</a>: edit its prices, then move subscriptions to it.',
                    url,
                    successor,
                ),
            )


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
            kwargs["queryset"] = _tax_rates_offered(self, request)
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


class ContractLineInline(ProjectScopedInline):
    model = ContractLine
    form = PricedItemForm
    extra = 1
    fields = PRICING_LAYOUT


@admin.register(Contract)
class ContractAdmin(ProjectScopedAdmin):
    """Upload a signed contract, enter the counterparty, the lines and the schedule, then
    **Accept contract**: the customer, a private plan and the subscription are created at once."""

    form = ContractForm
    list_display = ["title", "counterparty", "status", "start_date", "currency", "accepted_at", "project"]
    list_filter = [ProjectListFilter, "status", "currency"]
    search_fields = [
        "title",
        "public_id",
        "customer_name",
        "customer_email",
        "customer__name",
        "customer__email",
    ]
    inlines = [ContractLineInline]
    actions = ["accept"]
    readonly_fields = [
        "public_id",
        "status",
        "download",
        "accepted_at",
        "accepted_by",
        "created_objects",
        "audit_trail",
    ]
    fieldsets = [
        (None, {"fields": ["project", "title", "document", "download", "public_id", "status"]}),
        (
            "Counterparty",
            {
                "fields": ["customer", "customer_name", "customer_email", "customer_external_id"],
                "description": "An existing customer, or the details of a new one.",
            },
        ),
        (
            "Invoice schedule",
            {
                "fields": [
                    "currency",
                    ("interval", "interval_count"),
                    "billing_anchor",
                    "start_date",
                    "payment_terms_days",
                ]
            },
        ),
        ("Notes", {"fields": ["notes"]}),
        ("Acceptance", {"fields": ["accepted_at", "accepted_by", "created_objects", "audit_trail"]}),
    ]

    @admin.display(description="counterparty")
    def counterparty(self, contract):
        return contract.customer or contract.customer_name

    @admin.display(description="document")
    def download(self, contract):
        if not contract.pk or not contract.document:
            return "-"
        url = reverse("admin:catalog_contract_document", args=[contract.pk])
        return format_html('<a href="{}">Download the signed PDF</a>', url)

    @admin.display(description="created")
    def created_objects(self, contract):
        links = [
            (
                reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk]),
                obj._meta.verbose_name,
                obj,
            )
            for obj in (contract.customer, contract.plan, contract.subscription)
            if obj is not None and contract.status == ContractStatus.ACCEPTED
        ]
        return format_html_join(", ", '<a href="{}">{}: {}</a>', links) or "-"

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.status == ContractStatus.ACCEPTED:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return (obj is None or obj.status == ContractStatus.DRAFT) and super().has_delete_permission(
            request, obj
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/document/",
                self.admin_site.admin_view(self.document_view),
                name="catalog_contract_document",
            ),
            *super().get_urls(),
        ]

    def document_view(self, request, pk):
        contract = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_view_permission(request, contract) or not contract.document:
            raise Http404
        return FileResponse(
            contract.document.open("rb"), as_attachment=True, filename=f"{contract.public_id}.pdf"
        )

    @admin.action(description="Accept contract", permissions=["change"])
    def accept(self, request, queryset):
        for contract in queryset:
            try:
                services.contract_accept(contract=contract, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"{contract}: {exc.message}")
            else:
                messages.success(request, f"{contract}: accepted; customer, plan and subscription created.")


# --- tax rates and coupons ---------------------------------------------------------------------------


def _tax_rates_offered(model_admin: ProjectScopedAdmin, request):
    rates = TaxRate.objects.filter(archived_at__isnull=True).select_related("project")
    if request.user.is_superuser:
        return rates
    return rates.filter(project__in=model_admin._writable(request))


def _form_error(form, error: DomainError) -> None:
    """A service's refusal on the form field it names (`amount_off.USD` → amount_off), else the form."""
    field = (error.param or "").split(".")[0].split("[")[0]
    form.add_error(field if field in form.fields else None, error.message)


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
                _form_error(self, error)
        return cleaned


@admin.register(TaxRate)
class TaxRateAdmin(ArchiveActionsMixin, ProjectScopedAdmin):
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

    @admin.display(description="percentage", ordering="percentage")
    def percentage_label(self, rate):
        return f"{rate.percentage.normalize():f} %"

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return [*self.readonly_fields, "project", "percentage", "inclusive"]
        return self.readonly_fields

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
                _form_error(self, error)
        project = cleaned.get("project") or getattr(self.instance, "project", None)
        for name, owner in (("plans", "project_id"), ("charges", "plan__project_id")):
            chosen = cleaned.get(name)
            if project is not None and chosen is not None and chosen.exclude(**{owner: project.pk}).exists():
                self.add_error(name, "This belongs to another project.")
        return cleaned


class CouponRedemptionInline(admin.TabularInline):
    """Read-only: coupons are applied and removed through the API (POST/DELETE
    /v1/customers/{id}/coupons), which checks the coupon's limits."""

    model = CouponRedemption
    fields = ["public_id", "customer", "subscription", "created_at", "removed_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Coupon)
class CouponAdmin(ArchiveActionsMixin, ProjectScopedAdmin):
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

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(redemption_total=Count("redemptions"))

    @admin.display(description="discount")
    def discount(self, coupon):
        if coupon.kind == CouponKind.PERCENTAGE:
            return f"{coupon.percent_off.normalize():f} %"
        return ", ".join(
            money(Decimal(amount), currency, "en_US")
            for currency, amount in sorted(coupon.amount_off.items())
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
        if obj is not None:
            fixed = ["project", "code", "kind", "percent_off", "amount_off", "duration", "duration_periods"]
            return [*self.readonly_fields, *fixed, "plans", "charges"]
        return self.readonly_fields

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
