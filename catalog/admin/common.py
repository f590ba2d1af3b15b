"""What the catalog admin pages share: read-only fields shown readably, the priced-item inline,
archiving, the tax rates offered."""

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from billing_site.admin import ProjectScopedAdmin, ProjectScopedInline
from billing_site.admin_display import EMPTY, price_text, quantity_text
from billing_site.errors import DomainError
from catalog.forms import PricedItemForm
from catalog.models import TaxRate
from catalog.pricing import PricingModel

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


class ReadOnlyDisplays:
    """Where a field is read-only (a viewer's page, a plan in use, an accepted contract, a field
    fixed once created), show it through a display method rather than as Django would (49.000000000000,
    a JSON dump, a link to media nobody serves): `read_only_displays = {"base_fee": "base_fee_label"}`.
    Several fields may share one display (the address parts: the address), shown once. For admins
    and inlines that name their fields (`fields` or `fieldsets`)."""

    read_only_displays: dict[str, str] = {}

    def get_readonly_fields(self, request, obj=None):
        displays = dict.fromkeys(self.read_only_displays.values())
        return [*super().get_readonly_fields(request, obj), *displays]

    def get_fieldsets(self, request, obj=None):
        read_only = not self.has_change_permission(request, obj)
        fixed = set(self.get_readonly_fields(request, obj))
        return [
            (title, {**options, "fields": self._shown(options["fields"], read_only, fixed, set())})
            for title, options in super().get_fieldsets(request, obj)
        ]

    def _shown(self, names: list | tuple, read_only: bool, fixed: set[str], seen: set[str]) -> list:
        """`names` (a fieldset's fields, rows included) with each read-only field replaced by its
        display, each display once."""
        shown: list = []
        for name in names:
            if isinstance(name, list | tuple):
                row = tuple(self._shown(name, read_only, fixed, seen))
                shown += [row] if row else []
                continue
            if read_only or name in fixed:
                name = self.read_only_displays.get(name, name)
            if name not in seen:
                seen.add(name)
                shown.append(name)
        return shown


def metadata_lines(metadata: dict[str, str] | None) -> str:
    """Metadata as the form takes it, `key = value` a line, for a read-only page."""
    return format_html_join("", "<div>{} = {}</div>", sorted((metadata or {}).items())) or EMPTY


def _price_display(field: str) -> Callable[[Any, Any], str]:
    @admin.display(description=field.replace("_", " "))
    def show(inline, item) -> str:
        return price_text(item, getattr(item, field), **inline.paths)

    return show


def _quantity_display(field: str, unit: str = "") -> Callable[[Any, Any], str]:
    @admin.display(description=field.replace("_", " "))
    def show(inline, item) -> str:
        value = getattr(item, field)
        return (
            EMPTY if value is None else f"{quantity_text(item, value, project=inline.paths['project'])}{unit}"
        )

    return show


class PricedItemInline(ReadOnlyDisplays, ProjectScopedInline):
    """A plan's charges or a contract's lines: the pricing form, validated like the API; read-only,
    prices in their currency and tiers as a table."""

    form = PricedItemForm
    fields = PRICING_LAYOUT
    # Where the item's currency and project are: the plan's, the contract's.
    owner = ""
    read_only_displays = {
        "unit_price": "unit_price_label",
        "tiers": "tiers_table",
        "package_size": "package_size_label",
        "percentage_rate": "percentage_rate_label",
        "fixed_fee_per_event": "fixed_fee_per_event_label",
        "min_fee_per_event": "min_fee_per_event_label",
        "max_fee_per_event": "max_fee_per_event_label",
        "free_units": "free_units_label",
        "minimum_amount": "minimum_amount_label",
        "free_amount": "free_amount_label",
        "overage_unit_price": "overage_unit_price_label",
    }
    unit_price_label = _price_display("unit_price")
    package_size_label = _quantity_display("package_size")
    percentage_rate_label = _quantity_display("percentage_rate", " %")
    fixed_fee_per_event_label = _price_display("fixed_fee_per_event")
    min_fee_per_event_label = _price_display("min_fee_per_event")
    max_fee_per_event_label = _price_display("max_fee_per_event")
    free_units_label = _quantity_display("free_units")
    minimum_amount_label = _price_display("minimum_amount")
    free_amount_label = _price_display("free_amount")
    overage_unit_price_label = _price_display("overage_unit_price")

    @property
    def paths(self) -> dict[str, str]:
        return {"currency": f"{self.owner}__currency", "project": f"{self.owner}__project"}

    @admin.display(description="tiers")
    def tiers_table(self, item) -> str:
        if not item.tiers:
            return EMPTY
        rate = item.pricing_model == PricingModel.GRADUATED_PERCENTAGE
        rows = (
            (
                "∞"
                if tier.get("up_to") is None
                else quantity_text(item, tier["up_to"], project=self.paths["project"]),
                f"{quantity_text(item, tier['rate'], project=self.paths['project'])} %"
                if rate
                else price_text(item, tier["unit_price"], **self.paths),
                price_text(item, tier.get("flat_fee") or 0, **self.paths),
            )
            for tier in item.tiers
        )
        return format_html(
            '<table class="tiers"><thead><tr><th>up to</th><th>{}</th><th>flat fee</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            "rate" if rate else "unit price",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )


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
