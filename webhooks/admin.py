from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from accounts.admin import OWNER_ONLY
from billing_site.admin import CappedPaginator, ProjectListFilter, ProjectScopedAdmin, ReadOnlyAdminMixin
from billing_site.dashboard import FAILING_ENDPOINTS
from billing_site.errors import DomainError
from webhooks import services
from webhooks.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from webhooks.signing import iso_timestamp


class _ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Records shown on their parent's page, which is already scoped to the user's projects."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_view_permission(self, request, obj=None) -> bool:
        return True


class EventDeliveryInline(_ReadOnlyInline):
    model = Delivery
    verbose_name_plural = "deliveries"
    show_change_link = True
    fields = [
        "public_id",
        "endpoint",
        "is_redelivery",
        "status",
        "attempt_count",
        "last_status_code",
        "last_attempt_at",
        "next_attempt_at",
    ]


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = ["created_at", "type", "object_type", "object_id", "public_id", "project"]
    list_filter = [ProjectListFilter, "type"]
    search_fields = ["public_id", "object_id", "type"]
    readonly_fields = ["public_id", "project", "type", "created_at", "object_type", "object_id", "data"]
    inlines = [EventDeliveryInline]
    paginator = CappedPaginator
    show_full_result_count = False


def _deliveries_link(endpoint: WebhookEndpoint) -> str:
    url = reverse("admin:webhooks_delivery_changelist")
    return format_html('<a href="{}?endpoint__id__exact={}">Deliveries</a>', url, endpoint.pk)


class WebhookEndpointForm(forms.ModelForm):
    event_types = forms.CharField(
        required=False,
        help_text="Comma-separated types (invoice.paid) or families (invoice.*). Empty: every event.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["project", "url", "description", "event_types", "enabled"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["event_types"] = ", ".join(self.instance.event_types)

    def clean_event_types(self) -> list[str]:
        return [part.strip() for part in self.cleaned_data["event_types"].split(",") if part.strip()]

    def clean(self):
        """The service's own checks (URL rule, SSRF, filter syntax), shown on the form's fields."""
        cleaned = super().clean()
        project = cleaned.get("project") or (self.instance.project if self.instance.project_id else None)
        fields = {name: cleaned[name] for name in ("url", "description", "event_types") if name in cleaned}
        if project is None or not fields:
            return cleaned
        try:
            cleaned.update(services.webhook_endpoint_clean(project=project, fields=fields))
        except DomainError as refused:
            field = (refused.param or "").split("[")[0]
            self.add_error(field if field in self.fields else None, refused.message)
        return cleaned


class HealthFilter(admin.SimpleListFilter):
    """`?health=failing`: the endpoints the dashboard counts as failing (their latest attempt
    failed, or they were disabled automatically; billing_site.dashboard.FAILING_ENDPOINTS)."""

    title = "health"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return [("failing", "Failing or disabled automatically"), ("not_failing", "Not failing")]

    def queryset(self, request, queryset):
        if self.value() == "failing":
            return queryset.filter(FAILING_ENDPOINTS)
        if self.value() == "not_failing":
            return queryset.exclude(FAILING_ENDPOINTS)
        return queryset


ENDPOINT_EDITABLE = ["url", "description", "event_types", "enabled"]
ENDPOINT_STATE = [
    "disabled_reason",
    "disabled_at",
    "failing_since",
    "previous_secret_expires_at",
    "created_at",
    "updated_at",
    "deliveries",
]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ProjectScopedAdmin):
    """Endpoints are written through the services (audited); the secret is shown once, in a message.
    Like API keys, they are the owner's: their secret lets whoever holds it sign webhooks."""

    write_roles = OWNER_ONLY
    form = WebhookEndpointForm
    list_display = [
        "url",
        "project",
        "enabled",
        "disabled_reason",
        "failing_since",
        "created_at",
        "deliveries",
    ]
    list_filter = [ProjectListFilter, HealthFilter, "enabled", "disabled_reason"]
    search_fields = ["url", "public_id", "description"]
    actions = ["rotate_secret"]

    @admin.display(description="Deliveries")
    def deliveries(self, endpoint: WebhookEndpoint) -> str:
        return _deliveries_link(endpoint)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["project", *ENDPOINT_EDITABLE]
        return ["public_id", "project", *ENDPOINT_EDITABLE, *ENDPOINT_STATE]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["public_id", "project", *ENDPOINT_STATE]

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in ENDPOINT_EDITABLE}
        if change:
            services.webhook_endpoint_update(
                endpoint=WebhookEndpoint.objects.get(pk=obj.pk),
                changes={name: data[name] for name in form.changed_data if name in data},
                actor=request.user,
            )
            return
        endpoint = services.webhook_endpoint_create(
            project=form.cleaned_data["project"], actor=request.user, **data
        )
        obj.pk = endpoint.pk  # the admin redirects to the endpoint it believes it saved
        messages.warning(
            request, f"Copy the signing secret now; it will not be shown again: {endpoint.secret}"
        )

    def delete_model(self, request, obj):
        services.webhook_endpoint_delete(endpoint=obj, actor=request.user)

    @admin.action(description="Rotate the signing secret of selected endpoints", permissions=["change"])
    def rotate_secret(self, request, queryset):
        for endpoint in queryset.select_related("project"):
            if not self.has_change_permission(request, endpoint):
                continue
            endpoint = services.webhook_endpoint_rotate_secret(endpoint=endpoint, actor=request.user)
            messages.warning(
                request,
                f"{endpoint.url}: copy the new signing secret now; it will not be shown again: "
                f"{endpoint.secret} (the old one also signs until "
                f"{iso_timestamp(endpoint.previous_secret_expires_at)}).",
            )


class DeliveryAttemptInline(_ReadOnlyInline):
    model = DeliveryAttempt
    fields = [
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "succeeded",
        "early",
        "error",
        "response_body",
        "url",
    ]


@admin.register(Delivery)
class DeliveryAdmin(ProjectScopedAdmin):
    """Delivery records with every attempt. They are not edited; Redeliver sends the event again."""

    list_display = [
        "public_id",
        "event_type",
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "last_attempt_at",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = [
        "status",
        ("endpoint", admin.RelatedOnlyFieldListFilter),
        "event__type",
        "is_redelivery",
        ("project", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["event", "endpoint"]
    search_fields = ["public_id", "event__public_id", "endpoint__url"]
    fields = [
        "public_id",
        "project",
        "endpoint",
        "event",
        "is_redelivery",
        "status",
        "attempt_count",
        "early_failures",
        "next_attempt_at",
        "planned_attempt_at",
        "claimed_until",
        "last_attempt_at",
        "last_status_code",
        "last_error",
        "succeeded_at",
        "created_at",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]
    paginator = CappedPaginator
    show_full_result_count = False

    @admin.display(description="Event type", ordering="event__type")
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # A delivery's page is read-only; "change" on the list is the right to redeliver.
        return obj is None and super().has_change_permission(request)

    @admin.action(description="Redeliver the selected deliveries' events", permissions=["change"])
    def redeliver(self, request, queryset):
        sent, refused = 0, []
        for delivery in queryset.select_related("event", "endpoint__project"):
            if not super().has_change_permission(request, delivery):
                continue
            try:
                services.webhook_event_redeliver(
                    event=delivery.event, endpoint=delivery.endpoint, actor=request.user
                )
            except DomainError as error:
                refused.append(f"{delivery.public_id}: {error.message}")
            else:
                sent += 1
        if sent:
            messages.success(request, f"Redelivering {sent} event(s).")
        for problem in refused:
            messages.error(request, problem)
