from django import forms
from django.contrib import admin, messages

from billing_site import formats
from billing_site.admin import ProjectListFilter, ProjectScopedAdmin, ReadOnlyInline, SameProjectForm
from billing_site.admin_display import locale_of, price_text
from billing_site.errors import DomainError
from catalog.admin.common import ReadOnlyDisplays, metadata_lines
from catalog.forms import MetadataField
from subscriptions import services
from subscriptions.models import Status, Subscription, SubscriptionPhase, status_expression

TERMS = ["ends_at", "external_reference", "payment_terms_days", "metadata"]


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return Status.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(current_status=self.value())
        return queryset


class PhaseInline(ReadOnlyInline):
    model = SubscriptionPhase
    fields = ["starts_at", "ends_at", "plan", "base_fee", "paused"]
    readonly_fields = fields
    verbose_name_plural = "phases (which plan applied when; the billing history)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("plan__project")

    @admin.display(description="base fee")
    def base_fee(self, phase):
        return price_text(phase.plan, phase.plan.base_fee)


class SubscriptionCreateForm(SameProjectForm):
    trial_days = forms.IntegerField(min_value=0, required=False, help_text="Blank: the plan's trial.")

    class Meta:
        model = Subscription
        fields = ["project", "customer", "plan", "starts_at", "trial_days", "billing_anchor", *TERMS]


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyDisplays, ProjectScopedAdmin):
    """Subscriptions. Created here or through the API; afterwards only terms are edited directly,
    and the lifecycle (pause, resume, cancel) goes through the actions."""

    list_display = [
        "public_id",
        "customer",
        "plan",
        "status_label",
        "current_period",
        "project",
    ]
    list_filter = [
        ProjectListFilter,
        StatusFilter,
        ("plan", admin.RelatedOnlyFieldListFilter),
        "plan__currency",
        "billing_anchor",
    ]
    search_fields = [
        "public_id",
        "customer__name",
        "customer__email",
        "customer__external_id",
        "external_reference",
    ]
    list_select_related = ["customer", "plan", "project"]
    inlines = [PhaseInline]
    actions = ["pause", "resume", "cancel_now", "cancel_at_period_end"]
    readonly_fields = [
        "public_id",
        "project",
        "customer",
        "plan",
        "status_label",
        "starts_at",
        "trial_ends_at",
        "billing_anchor",
        "timezone",
        "current_period_start",
        "current_period_end",
        "canceled_at",
        "cancel_at_period_end",
        "paused_at",
        "created_at",
        "audit_trail",
    ]

    read_only_displays = {"metadata": "metadata_text"}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(current_status=status_expression())

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "metadata":
            return MetadataField()
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="current period", ordering="current_period_end")
    def current_period(self, subscription):
        start, end = subscription.current_period_start, subscription.current_period_end
        return formats.compact_period(start, end, subscription.timezone, locale_of(subscription))

    @admin.display(description="metadata")
    def metadata_text(self, subscription):
        return metadata_lines(subscription.metadata)

    @admin.display(description="status", ordering="current_status")
    def status_label(self, subscription):
        return Status(getattr(subscription, "current_status", subscription.status)).label

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = SubscriptionCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return SubscriptionCreateForm._meta.fields
        return [*self.readonly_fields, *TERMS]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else super().get_readonly_fields(request, obj)

    def save_model(self, request, obj, form, change):
        """Through the services: phases, periods, events and the audit trail stay consistent."""
        data = form.cleaned_data
        if change:
            changes = {name: data[name] for name in form.changed_data if name in TERMS}
            if changes:
                services.subscription_update_terms(subscription=obj, changes=changes, actor=request.user)
            return
        created = services.subscription_create(
            project=data["project"],
            customer=data["customer"],
            plan=data["plan"],
            actor=request.user,
            starts_at=data["starts_at"],
            ends_at=data.get("ends_at"),
            trial_days=data.get("trial_days"),
            billing_anchor=data["billing_anchor"],
            external_reference=data.get("external_reference", ""),
            payment_terms_days=data.get("payment_terms_days"),
            metadata=data.get("metadata") or {},
        )
        obj.pk = created.pk

    def _each(self, request, queryset, action, description: str) -> None:
        done = 0
        for subscription in queryset:
            try:
                action(subscription=subscription, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"{subscription.public_id}: {exc.message}")
            else:
                done += 1
        if done:
            messages.success(request, f"{description}: {done} subscription(s).")

    @admin.action(description="Pause now", permissions=["change"])
    def pause(self, request, queryset):
        self._each(request, queryset, services.subscription_pause, "Paused")

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request, queryset):
        self._each(request, queryset, services.subscription_resume, "Resumed")

    @admin.action(description="Cancel now", permissions=["change"])
    def cancel_now(self, request, queryset):
        def cancel(**kwargs):
            services.subscription_cancel(at_period_end=False, **kwargs)

        self._each(request, queryset, cancel, "Canceled")

    @admin.action(description="Cancel at the end of the current period", permissions=["change"])
    def cancel_at_period_end(self, request, queryset):
        def cancel(**kwargs):
            services.subscription_cancel(at_period_end=True, **kwargs)

        self._each(request, queryset, cancel, "Will cancel at period end")
