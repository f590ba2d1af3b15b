"""What the catalog admin pages share: the pricing layout, archiving, the tax rates offered."""

from django.contrib import admin, messages

from billing_site.admin import ProjectScopedAdmin
from billing_site.errors import DomainError
from catalog.models import TaxRate

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


def tax_rates_offered(model_admin: ProjectScopedAdmin, request):
    rates = TaxRate.objects.filter(archived_at__isnull=True).select_related("project")
    if request.user.is_superuser:
        return rates
    return rates.filter(project__in=model_admin._writable(request))


def form_error(form, error: DomainError) -> None:
    """A service's refusal on the form field it names (`amount_off.USD` → amount_off), else the form."""
    field = (error.param or "").split(".")[0].split("[")[0]
    form.add_error(field if field in form.fields else None, error.message)
