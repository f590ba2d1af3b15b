"""Products, plans and their charges."""

from django.contrib import admin, messages
from django.db.models import Count, Exists, OuterRef
from django.urls import reverse
from django.utils.html import format_html

from billing_site.admin import ProjectListFilter, ProjectScopedAdmin
from billing_site.admin_display import price_column
from billing_site.errors import DomainError
from catalog import services
from catalog.admin.common import (
    ArchiveActionsMixin,
    ArchivedListFilter,
    PricedItemInline,
    ReadOnlyDisplays,
    tax_rates_offered,
)
from catalog.models import (
    Charge,
    Plan,
    Product,
)
from catalog.selectors import plan_in_use
from subscriptions.models import Subscription


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


class ChargeInline(PricedItemInline):
    model = Charge
    owner = "plan"
    extra = 0
    show_change_link = False


@admin.register(Plan)
class PlanAdmin(ReadOnlyDisplays, ArchiveActionsMixin, ProjectScopedAdmin):
    """Plans and their charges. A plan subscriptions use is read-only here: its prices change
    through a new version (the "Create new version" action), which subscriptions move to."""

    list_display = [
        "name",
        "code",
        "version",
        "product",
        "currency",
        "interval_label",
        "base_fee_label",
        "minimum_commitment_label",
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
    read_only_displays = {"base_fee": "base_fee_label", "minimum_commitment": "minimum_commitment_label"}
    base_fee_label = price_column("base_fee", description="base fee")
    minimum_commitment_label = price_column("minimum_commitment", description="minimum commitment")
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
            kwargs["queryset"] = tax_rates_offered(self, request)
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
        fields = super().get_readonly_fields(request, obj)
        return [*fields, "code"] if obj is not None else fields

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
