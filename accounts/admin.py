import copy
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.forms.models import construct_instance
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.views.decorators.clickjacking import xframe_options_sameorigin

from accounts import services
from accounts.models import ALL_SCOPES, ApiKey, AuditLogEntry, Membership, Project, Role, Scope
from billing_site.admin import (
    CappedPaginator,
    ProjectListFilter,
    ProjectScopedAdmin,
    ReadOnlyAdminMixin,
    SameProjectForm,
    roles_for,
)
from billing_site.downloads import pdf_response
from billing_site.money import decimal_string
from invoicing.documents import pdf_from_html, sample_html, template_check
from invoicing.emails import email_templates_check

OWNER_ONLY = frozenset({Role.OWNER})
MAX_TEMPLATE_BYTES = 200 * 1024
# What the invoice preview takes from the unsaved form (GET parameters), to show it as typed.
PREVIEW_FIELDS = (
    "accent_color",
    "company_name",
    "company_address",
    "company_tax_id",
    "footer_text",
    "payment_instructions",
)
# The HTML preview is the project's own template, which may print values raw: it runs as a document
# of no origin, with no scripts and nothing loaded but inline styles and data: images and fonts.
# (Not the PDF: browsers refuse to show a PDF in a sandboxed document, and WeasyPrint runs no script.)
PREVIEW_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]

    def _is_owner(self, request, obj) -> bool:
        return request.user.is_superuser or (obj is not None and roles_for(request).get(obj.pk) == Role.OWNER)

    def has_add_permission(self, request, obj=None) -> bool:
        return self._is_owner(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._is_owner(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._is_owner(request, obj)

    def has_view_permission(self, request, obj=None) -> bool:
        return True


class ProjectForm(SameProjectForm):
    """Refuses invoice and email templates that do not render, with the error on the field: each is
    checked when it changes, against the project as the form would save it."""

    invoice_template_file = forms.FileField(
        required=False,
        label="Upload a template",
        help_text="An HTML file (UTF-8, at most 200 KB): it replaces the template above, checked "
        "the same way.",
    )

    def clean_invoice_template_file(self):
        upload = self.cleaned_data.get("invoice_template_file")
        if not upload:
            return None
        data = upload.read(MAX_TEMPLATE_BYTES + 1)
        if len(data) > MAX_TEMPLATE_BYTES:
            raise ValidationError("At most 200 KB.", code="file_too_large")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("The file is not UTF-8 text.", code="not_text") from None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("invoice_template_file"):
            cleaned["invoice_template"] = cleaned["invoice_template_file"]
            self.changed_data.append("invoice_template")
        # The project as it would be saved, without the uploaded logo (reading it here would
        # close the upload before it is stored); the logo does not decide whether a template renders.
        project = construct_instance(self, copy.copy(self.instance), exclude=["logo"])
        if "invoice_template" in self.changed_data and "invoice_template" in cleaned:
            try:
                template_check(project, cleaned["invoice_template"])
            except ValidationError as error:
                self.add_error("invoice_template", error)
        email_fields = ("email_subject_template", "email_body_template")
        if any(name in self.changed_data for name in email_fields) and all(
            name in cleaned for name in email_fields
        ):
            try:
                email_templates_check(
                    project, subject=cleaned["email_subject_template"], body=cleaned["email_body_template"]
                )
            except ValidationError as error:
                self.add_error(None, error)
        return cleaned


@admin.register(Project)
class ProjectAdmin(ProjectScopedAdmin):
    project_path = "id"
    write_roles = OWNER_ONLY
    audit_masked_fields = services.PROJECT_SECRET_FIELDS
    form = ProjectForm
    change_form_template = "admin/accounts/project/change_form.html"
    list_display = ["name", "public_id", "currency", "timezone", "invoice_delivery", "payment_processor"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [MembershipInline]
    fieldsets = [
        (None, {"fields": ["name", "public_id", "created_at", "currency", "timezone"]}),
        (
            "Invoices",
            {
                "fields": [
                    "invoice_delivery",
                    "grace_period_hours",
                    "payment_terms_days",
                    "invoice_number_prefix",
                ]
            },
        ),
        (
            "Company on invoices",
            {
                "fields": [
                    "company_name",
                    "company_address",
                    "company_tax_id",
                    "logo",
                    "accent_color",
                    "footer_text",
                    "payment_instructions",
                    "locale",
                ]
            },
        ),
        (
            "Invoice emails",
            {
                "fields": [
                    "email_invoices",
                    "sender_name",
                    "sender_email",
                    "reply_to_email",
                    "email_subject_template",
                    "email_body_template",
                ]
            },
        ),
        ("Invoice template", {"fields": ["invoice_template", "invoice_template_file"]}),
        (
            "Payments",
            {
                "fields": [
                    "payment_processor",
                    "stripe_publishable_key",
                    "stripe_secret_key",
                    "stripe_webhook_secret",
                    "payout_delay_hours",
                ]
            },
        ),
        (
            "API",
            {
                "fields": [
                    "api_rate_limit_per_minute",
                    "ingest_rate_limit_per_minute",
                    "require_usage_idempotency_key",
                    "unmatched_usage",
                    "allow_private_webhook_urls",
                ]
            },
        ),
    ]

    def has_add_permission(self, request) -> bool:
        # New tenants come from `manage.py create_project` or a superuser.
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["preview_fields"] = PREVIEW_FIELDS
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        return [
            path(
                "<int:pk>/invoice-preview/",
                self.admin_site.admin_view(xframe_options_sameorigin(self.invoice_preview_view)),
                name="accounts_project_invoice_preview",
            ),
            *super().get_urls(),
        ]

    def invoice_preview_view(self, request, pk):
        """The sample invoice with the project's saved settings and the form's unsaved values of
        PREVIEW_FIELDS (a value the field would refuse is ignored). Saves nothing."""
        project = get_object_or_404(self.get_queryset(request), pk=pk)
        for name in PREVIEW_FIELDS:
            if name in request.GET:
                try:
                    value = Project._meta.get_field(name).clean(request.GET[name], project)
                except ValidationError:
                    continue
                setattr(project, name, value)
        html = sample_html(project)
        if request.GET.get("format") == "pdf":
            return pdf_response(pdf_from_html(html), "sample-invoice.pdf")
        return HttpResponse(
            html, content_type="text/html; charset=utf-8", headers={"Content-Security-Policy": PREVIEW_CSP}
        )

    def save_model(self, request, obj, form, change):
        """Changes go through the service, as the API's do: audited, and announced by a
        `project.updated` event."""
        if not change:
            super().save_model(request, obj, form, change)
            return
        fields = {field.name for field in Project._meta.concrete_fields}
        changes = {name: getattr(obj, name) for name in form.changed_data if name in fields}
        services.project_update(project=obj, changes=changes, actor=request.user)

    def save_formset(self, request, form, formset, change):
        """Membership edits go through the service, so each is audited."""
        project = form.instance
        with transaction.atomic():
            for membership in formset.save(commit=False):
                services.membership_set(
                    project=project, user=membership.user, role=membership.role, actor=request.user
                )
            for membership in formset.deleted_objects:
                services.audit_record(
                    project=project,
                    actor=request.user,
                    action="membership.deleted",
                    target=membership,
                    changes={"user": membership.user.get_username(), "role": membership.role},
                )
                membership.delete()


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, initial=ALL_SCOPES, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ["project", "name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(ProjectScopedAdmin):
    write_roles = OWNER_ONLY
    list_display = [
        "name",
        "prefix",
        "project",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = [ProjectListFilter, ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "public_id"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "public_id",
            "project",
            "name",
            "prefix",
            "scopes",
            "created_by",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
        ]

    def get_fields(self, request, obj=None):
        return ["project", "name", "scopes"] if obj is None else self.get_readonly_fields(request, obj)

    def save_model(self, request, obj, form, change):
        api_key, secret = services.api_key_create(
            project=form.cleaned_data["project"],
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            actor=request.user,
        )
        obj.pk = api_key.pk  # the admin redirects to the key it believes it saved
        messages.warning(request, f"Copy this secret now; it will not be shown again: {secret}")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # keys are revoked, not deleted: the audit trail refers to them

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        for api_key in queryset.select_related("project"):
            if self.has_change_permission(request, api_key):
                services.api_key_revoke(api_key=api_key, actor=request.user)
        messages.success(request, "Revoked.")


# A decimal recorded as text: "49.000000000000", "0E-12" (older entries), "12.50".
_DECIMAL_TEXT = re.compile(r"-?\d+(\.\d+)?(E[+-]?\d+)?")


def change_value_text(value: Any) -> str:
    """A value the audit trail recorded, as a person reads it: lists joined with commas, mappings
    as `key: value`, yes/no, and decimals without the trailing zeros of storage (49 rather than
    49.000000000000, 0 rather than 0E-12; two places such as 12.50 stay)."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(change_value_text(item) for item in value) or "(empty)"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {change_value_text(item)}" for key, item in value.items()) or "(empty)"
    text = str(value)
    if _DECIMAL_TEXT.fullmatch(text) and ("E" in text or len(text.partition(".")[2]) > 2):
        return decimal_string(text)
    return text or "(empty)"


def change_rows(entry: AuditLogEntry) -> list[tuple[str, str]]:
    """(field, what it records) per recorded change, by field name (PostgreSQL's jsonb does not
    keep the order they were recorded in). A pair [old, new] reads "old → new"; the values an
    object was created with (actions `….created`, where a list of two is just a list) and other
    details read as they are. Masked secrets stay masked."""
    created = entry.action.endswith(".created")
    rows = []
    for name, value in sorted((entry.changes or {}).items()):
        if isinstance(value, list) and len(value) == 2 and not created:
            text = f"{change_value_text(value[0])} → {change_value_text(value[1])}"
        else:
            text = change_value_text(value)
        rows.append((name, text))
    return rows


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    list_display = [
        "created_at",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "changes_summary",
        "project",
    ]
    list_filter = [ProjectListFilter, "action", "object_type"]
    search_fields = ["actor_label", "object_id", "object_repr", "action"]
    paginator = CappedPaginator
    show_full_result_count = False
    fields = [
        "created_at",
        "project",
        "actor_label",
        "actor_user",
        "actor_api_key",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "changes_table",
    ]
    readonly_fields = fields

    @admin.display(description="changes")
    def changes_summary(self, entry: AuditLogEntry) -> str:
        text = "; ".join(f"{name}: {value}" for name, value in change_rows(entry))
        return Truncator(text).chars(100) or "-"

    @admin.display(description="changes")
    def changes_table(self, entry: AuditLogEntry) -> str:
        rows = change_rows(entry)
        if not rows:
            return "-"
        body = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', rows)
        return format_html('<table class="audit-changes">{}</table>', body)
