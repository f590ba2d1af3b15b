"""Meters, the usage event explorer, the unmatched queue, and the customer page's usage panel.

The event lists stay fast on millions of rows: capped counts, no date hierarchy (its DISTINCT over
the table is the slow part), filters that map onto the events table's indexes.
"""

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.safestring import SafeString

from accounts.models import Project
from billing_site import formats
from billing_site.admin import (
    CappedPaginator,
    ProjectListFilter,
    ProjectScopedAdmin,
    ReadOnlyAdminMixin,
    roles_for,
)
from billing_site.admin_display import locale_of, quantity_column, quantity_text
from billing_site.errors import DomainError
from catalog.models import Customer
from meters import selectors, services
from meters.aggregation import DAY, Scope, aggregate, bucket_spans
from meters.models import Meter, UnmatchedReason, UnmatchedUsageEvent, UsageEvent, WeightedInput

# --- meters ----------------------------------------------------------------------------------------


_RULE_FIELDS = ("aggregation", "property", "bucket", "rounding", "rounding_precision", "weighted_input")


class MeterForm(forms.ModelForm):
    class Meta:
        model = Meter
        fields = [
            "project", "code", "name", "unit", "aggregation", "property", "filters", "group_by",
            "whole_numbers_only", "allow_negative", "bucket", "rounding", "rounding_precision",
            "weighted_input",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Left out, they keep their defaults (a plain level-fed meter, no rounding).
        for name in ("rounding_precision", "weighted_input"):
            if name in self.fields:
                self.fields[name].required = False

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("rounding_precision") is None and "rounding_precision" in self.fields:
            cleaned["rounding_precision"] = 0
        if not cleaned.get("weighted_input") and "weighted_input" in self.fields:
            cleaned["weighted_input"] = WeightedInput.LEVEL
        try:
            if "filters" in cleaned:
                cleaned["filters"] = services.clean_filters(cleaned["filters"] or [])
            if "group_by" in cleaned:
                cleaned["group_by"] = services.clean_group_by(cleaned["group_by"] or [])
            # The rules between fields (a bucketed weighted_sum, a precision without rounding, …),
            # on the meter as it would be saved.
            services.check_meter_rules(
                Meter(**{name: cleaned.get(name, getattr(self.instance, name)) for name in _RULE_FIELDS})
            )
        except DomainError as error:
            raise forms.ValidationError({error.param.split("[")[0]: error.message}) from None
        locked = sorted(
            name
            for name in services.AGGREGATION_FIELDS & set(self.changed_data)
            if cleaned.get(name) != getattr(self.instance, name)
        )
        if self.instance.pk and locked and services.meter_has_usage(self.instance):
            raise forms.ValidationError(
                {
                    name: "Usage was already recorded with this meter: create a new meter instead."
                    for name in locked
                }
            )
        return cleaned


@admin.register(Meter)
class MeterAdmin(ProjectScopedAdmin):
    """Writes go through meters.services (which records the audit entry with the staff user), so
    the rules are the API's: e.g. what a meter aggregates is fixed once usage names it."""

    form = MeterForm
    list_display = ["code", "name", "aggregation", "property", "unit", "archived_at", "project"]
    list_filter = ["aggregation"]
    search_fields = ["code", "name", "=public_id"]
    readonly_fields = ["public_id", "created_at", "archived_at"]

    def get_readonly_fields(self, request, obj=None):
        # The code is the event name clients send: fixed once created.
        return [*super().get_readonly_fields(request, obj), "code"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        fields = {
            name: form.cleaned_data[name] for name in form.changed_data if name not in ("project", "code")
        }
        if change:
            meter = services.meter_update(meter=obj, changes=fields, actor=request.user)
        else:
            meter = services.meter_create(
                project=form.cleaned_data["project"], code=form.cleaned_data["code"],
                name=form.cleaned_data["name"], actor=request.user,
                **{name: value for name, value in fields.items() if name != "name"},
            )  # fmt: skip
        obj.pk = meter.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        try:
            services.meter_delete(meter=obj, actor=request.user)
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)


# --- usage events ----------------------------------------------------------------------------------


class InputFilter(admin.SimpleListFilter):
    """A text box in the filter sidebar (exact values: the tables are too big to list choices)."""

    template = "admin/meters/input_filter.html"
    placeholder = ""

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        preserved = [
            (name, value)
            for name, values in changelist.get_filters_params().items()
            if name != self.parameter_name
            for value in (values if isinstance(values, list) else [values])
        ]
        yield {"preserved": preserved, "value": self.value() or "", "placeholder": self.placeholder}


class CustomerFilter(InputFilter):
    title = "customer"
    parameter_name = "customer"
    placeholder = "external ID or cus_…"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if not value:
            return queryset
        customers = Customer.objects.filter(Q(external_id=value) | Q(public_id=value))
        if not request.user.is_superuser:
            customers = customers.filter(project__in=roles_for(request))
        ids = list(customers.values_list("pk", flat=True))
        if not ids:  # a customer that does not exist (yet): its unmatched events, by the name sent
            return queryset.filter(customer_external_id=value).exclude(unmatched_reason="")
        # meter_id is always one of the project's meters or null: naming them lets PostgreSQL use
        # the (meter, customer, timestamp) index instead of scanning.
        meters = Meter.objects.filter(project__in=customers.values("project"))
        return queryset.filter(Q(meter__in=meters) | Q(meter__isnull=True), customer_id__in=ids)


class _MomentFilter(InputFilter):
    placeholder = "2026-01-31 or 2026-01-31T12:00Z"
    lookup = ""

    def queryset(self, request, queryset):
        moment = _parse_moment(self.value() or "")
        return queryset if moment is None else queryset.filter(**{f"timestamp__{self.lookup}": moment})


class FromFilter(_MomentFilter):
    title = "time from (UTC, inclusive)"
    parameter_name = "from"
    lookup = "gte"


class ToFilter(_MomentFilter):
    title = "time to (UTC, exclusive)"
    parameter_name = "to"
    lookup = "lt"


def _parse_moment(text: str) -> datetime | None:
    text = text.strip()
    moment = parse_datetime(text) if "T" in text or " " in text else None
    if moment is None and (day := parse_date(text)) is not None:
        moment = datetime.combine(day, time())
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if timezone.is_naive(moment) else moment


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("matched", "Matched"), ("unmatched", "Unmatched (any reason)"), *UnmatchedReason.choices]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "matched":
            return queryset.filter(unmatched_reason="")
        if value == "unmatched":
            return queryset.exclude(unmatched_reason="")
        if value in UnmatchedReason.values:
            return queryset.filter(unmatched_reason=value)
        return queryset


class MeterFilter(admin.SimpleListFilter):
    title = "meter"
    parameter_name = "meter"

    def lookups(self, request, model_admin):
        meters = Meter.objects.select_related("project").order_by("code", "project__name")
        if not request.user.is_superuser:
            meters = meters.filter(project__in=roles_for(request))
        several = len({meter.project_id for meter in meters}) > 1
        return [(meter.pk, f"{meter.code} ({meter.project})" if several else meter.code) for meter in meters]

    def queryset(self, request, queryset):
        return queryset.filter(meter_id=self.value()) if self.value() else queryset


@admin.display(description="status")
def _status(event: UsageEvent) -> str:
    return "matched" if event.is_matched else event.get_unmatched_reason_display()


class UsageEventAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = [
        "public_id", "timestamp", "customer_external_id", "meter_code", "value_label", _status,
        "subscription", "received_at", "project",
    ]  # fmt: skip
    list_filter = [StatusFilter, ProjectListFilter, MeterFilter, CustomerFilter, FromFilter, ToFilter]
    list_select_related = ["subscription", "project"]
    search_fields = ["=public_id", "=idempotency_key"]
    paginator = CappedPaginator
    show_full_result_count = False
    list_per_page = 100
    ordering = ["-id"]
    change_list_template = "admin/meters/usageevent/change_list.html"
    fields = [
        "public_id", "project", "timestamp", "received_at", "customer_external_id", "meter_code",
        "value_label", "properties", "idempotency_key", "customer", "meter", "subscription",
        "unmatched_reason", "matched_at",
    ]  # fmt: skip
    value_label = quantity_column("value", description="value")

    def changelist_view(self, request, extra_context=None):
        counts = selectors.unmatched_reason_counts(self.get_queryset(request))
        reasons = [(value, label, counts.get(value, 0)) for value, label in UnmatchedReason.choices]
        return super().changelist_view(
            request,
            {**(extra_context or {}), "unmatched_counts": reasons, "unmatched_total": sum(counts.values())},
        )


admin.site.register(UsageEvent, UsageEventAdmin)


@admin.register(UnmatchedUsageEvent)
class UnmatchedUsageEventAdmin(UsageEventAdmin):
    """The queue of events waiting for their customer, meter or subscription."""

    actions = ["rematch"]

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(unmatched_reason="")

    def has_rematch_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or bool(self._writable(request))

    @admin.action(description="Match the selected events again now", permissions=["rematch"])
    def rematch(self, request: HttpRequest, queryset: QuerySet[UnmatchedUsageEvent]) -> None:
        matched = 0
        for project_id in queryset.values_list("project_id", flat=True).distinct().order_by():
            mine = queryset.filter(project_id=project_id)
            result = services.usage_rematch(
                project=mine.first().project,
                customer_external_ids=sorted(set(mine.values_list("customer_external_id", flat=True))),
                meter_codes=sorted(set(mine.values_list("meter_code", flat=True))),
            )
            matched += result.matched
        self.message_user(request, f"{matched} event(s) matched; the others still wait.")


# --- the admin index's unmatched usage counts ------------------------------------------------------


def unmatched_usage_panel(projects: list[Project]) -> SafeString:
    """How many unmatched events each of these projects (the staff user's) holds, each linking to
    its part of the unmatched queue: for the admin index's dashboard (billing_site/templatetags/
    dashboard.py), in one query."""
    if not projects:
        return SafeString("")
    counts = selectors.unmatched_counts_by_project(project_ids=[project.pk for project in projects])
    return render_to_string(
        "admin/meters/unmatched_usage_panel.html",
        {
            "counts": [(project, counts.get(project.pk, 0)) for project in projects],
            "url": reverse("admin:meters_unmatchedusageevent_changelist"),
        },
    )


# --- the customer page's usage panel ---------------------------------------------------------------


def customer_usage_panel(customer: Customer, now: datetime | None = None) -> SafeString:
    """The current period's usage per meter, with a bar per day: for the customer admin page."""
    now = now or timezone.now()
    subscriptions = []
    for usage in selectors.customer_current_usage(customer=customer, now=now):
        period = usage.period
        days = [
            start for start, _ in bucket_spans(period.start, min(period.end, now + timedelta(days=1)), DAY)
        ]
        meters = []
        scope = Scope(
            project_id=customer.project_id, customer_id=customer.pk, subscription_id=usage.subscription.pk
        )
        for item in usage.meters:
            daily = {
                row.bucket: row.quantity
                for row in aggregate(
                    meter=item.meter,
                    scope=scope,
                    start=period.start,
                    end=period.end,
                    now=now,
                    granularity=DAY,
                )
            }
            values = [daily.get(day, Decimal(0)) for day in days]
            highest = max([value for value in values if value > 0], default=Decimal(1))
            bars = [
                {
                    "day": day,
                    "quantity": quantity_text(customer, value),
                    "percent": int(max(value, Decimal(0)) * 100 / highest),
                }
                for day, value in zip(days, values, strict=True)
            ]
            meters.append(
                {"meter": item.meter, "quantity": quantity_text(customer, item.quantity), "bars": bars}
            )
        label = formats.compact_period(period.start, period.end, customer.timezone, locale_of(customer))
        subscriptions.append({"subscription": usage.subscription, "period": label, "meters": meters})
    return render_to_string(
        "admin/meters/customer_usage.html", {"customer": customer, "subscriptions": subscriptions}
    )
