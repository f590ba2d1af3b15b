"""What every admin page shares: project scoping, role enforcement and the audit trail.

A staff user sees only the projects they are a member of. `viewer` reads; `billing_admin` and
`owner` change billing data; project settings, members and API keys are the owner's. Superusers
see and change everything. Django's model permissions are not used: roles are per project, which
Django's global permissions cannot express.
"""

from collections.abc import Callable
from decimal import Decimal
from functools import cached_property, wraps
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.models import WRITE_ROLES, AuditLogEntry, Project
from accounts.selectors import user_roles
from accounts.services import MASKED_VALUE, audit_record
from billing_site.admin_display import DecimalInputs
from billing_site.errors import DomainError
from billing_site.money import decimal_string
from billing_site.months import month_param, month_parse, month_span, recent_months

admin.site.site_header = "Billable"
admin.site.site_title = "Billable admin"
admin.site.index_title = "Billing back office"
# Tables get the whole width (at 1440 px the sidebar took a third and cut the last columns); the
# apps are one click away under "Home".
admin.site.enable_nav_sidebar = False


def roles_for(request: HttpRequest) -> dict[int, str]:
    """Project id → the user's role there, looked up once per request."""
    if not hasattr(request, "_project_roles"):
        request._project_roles = user_roles(request.user)
    return request._project_roles


def check_same_project(form, project_id: int | None) -> None:
    """Every related object chosen in the form belongs to the same project as the object."""
    if project_id is None:
        return
    for name, value in list(form.cleaned_data.items()):
        if getattr(value, "project_id", project_id) != project_id:
            form.add_error(name, "This belongs to another project.")


class SameProjectForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        project = cleaned.get("project") or getattr(self.instance, "project", None)
        if isinstance(self.instance, Project):
            return cleaned
        check_same_project(self, getattr(project, "pk", None))
        return cleaned


class SameProjectInlineFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        for form in self.forms:
            if hasattr(form, "cleaned_data"):
                check_same_project(form, getattr(self.instance, "project_id", None))


def _audited(value) -> str:
    """A form value as the audit trail shows it: decimals without trailing zeros (49, not
    49.000000000000)."""
    return decimal_string(value) if isinstance(value, Decimal) else str(value)


def _writes(action: Callable) -> bool:
    return bool(set(getattr(action, "allowed_permissions", ())) - {"view"})


class ProjectScopedAdmin(DecimalInputs, admin.ModelAdmin):
    form = SameProjectForm
    # How to reach the Project from this model: "project", "customer__project", or "id" for Project.
    project_path = "project"
    # Roles that may add, change and delete here.
    write_roles: frozenset[str] = WRITE_ROLES
    # Fields whose values the audit trail records as changed but never shows.
    audit_masked_fields: frozenset[str] = frozenset()

    # --- scoping -------------------------------------------------------------------------------
    def project_id_of(self, obj: models.Model) -> int | None:
        if self.project_path == "id":
            return obj.pk
        *path, last = self.project_path.split("__")
        for step in path:
            obj = getattr(obj, step)
        return getattr(obj, f"{last}_id")

    def _readable(self, request: HttpRequest) -> set[int]:
        return set(roles_for(request))

    def _writable(self, request: HttpRequest) -> set[int]:
        return {pid for pid, role in roles_for(request).items() if role in self.write_roles}

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.project_path}__in": self._readable(request)})

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and (request.user.is_superuser or bool(self._readable(request)))

    def has_view_permission(self, request, obj=None) -> bool:
        if request.user.is_superuser:
            return True
        readable = self._readable(request)
        return bool(readable) if obj is None else self.project_id_of(obj) in readable

    def has_change_permission(self, request, obj=None) -> bool:
        if request.user.is_superuser:
            return True
        writable = self._writable(request)
        return bool(writable) if obj is None else self.project_id_of(obj) in writable

    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser or bool(self._writable(request))

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """Offer only objects of projects the user may write to."""
        if not request.user.is_superuser:
            related = db_field.remote_field.model
            writable = self._writable(request)
            if related is Project:
                kwargs["queryset"] = Project.objects.filter(pk__in=writable)
            elif any(field.name == "project" for field in related._meta.fields):
                kwargs["queryset"] = related._default_manager.filter(project__in=writable)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        """An object stays in its project: moving a customer or a product would leave what hangs on
        it (subscriptions, invoices, usage) in the old one."""
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and self.project_path == "project" and "project" not in fields:
            fields.append("project")
        return fields

    # --- actions -------------------------------------------------------------------------------
    def get_actions(self, request):
        """Every action that writes (any permission beyond view) acts only on the selected objects of
        projects where the user may write. Django checks an action's permission for the model, not
        for each object: a billing_admin of one project who only reads another would otherwise
        archive, cancel or delete there by selecting rows of both."""
        actions = super().get_actions(request)
        return {
            name: (self._writing_only(func) if _writes(func) else func, name, description)
            for name, (func, name, description) in actions.items()
        }

    def _writing_only(self, func: Callable) -> Callable:
        @wraps(func)
        def act(model_admin, request, queryset):
            if not request.user.is_superuser:
                writable = queryset.filter(**{f"{self.project_path}__in": self._writable(request)})
                left_out = queryset.count() - writable.count()
                if left_out:
                    messages.warning(
                        request,
                        f"{left_out} selected row(s) of projects where you only read were left unchanged.",
                    )
                queryset = writable
            return func(model_admin, request, queryset)

        return act

    # --- audit ---------------------------------------------------------------------------------
    def _project_of(self, obj: models.Model) -> Project | None:
        project_id = self.project_id_of(obj)
        return Project.objects.filter(pk=project_id).first() if project_id else None

    def form_changes(self, form) -> dict[str, list[str]]:
        changes = {}
        for name in form.changed_data:
            if name in self.audit_masked_fields:
                changes[name] = [MASKED_VALUE, MASKED_VALUE]
            else:
                changes[name] = [
                    _audited(form.initial.get(name, "")),
                    _audited(form.cleaned_data.get(name, "")),
                ]
        return changes

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit_record(
                project=self._project_of(obj),
                actor=request.user,
                action=f"admin.{obj._meta.model_name}.{'changed' if change else 'added'}",
                target=obj,
                changes=self.form_changes(form),
            )

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit_record(
                project=self._project_of(obj),
                actor=request.user,
                action=f"admin.{obj._meta.model_name}.deleted",
                target=obj,
            )
            super().delete_model(request, obj)

    @admin.display(description="history")
    def audit_trail(self, obj) -> str:
        """The latest audit entries for this object, linking to the full trail."""
        entries = AuditLogEntry.objects.filter(object_id=getattr(obj, "public_id", obj.pk))[:10]
        rows = format_html_join(
            "",
            "<li>{} · {} · {}</li>",
            ((e.created_at.strftime("%Y-%m-%d %H:%M"), e.actor_label, e.action) for e in entries),
        )
        url = reverse("admin:accounts_auditlogentry_changelist") + f"?q={getattr(obj, 'public_id', obj.pk)}"
        return format_html('<ul style="margin:0">{}</ul><a href="{}">Full history</a>', rows, url)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)


class ObjectActionsMixin:
    """Buttons on the page of a record nobody edits as a form (an invoice, a payment): each is a URL
    of its own that calls a service, so the rules, the audit trail and the events are the API's.

    For a ProjectScopedAdmin. Whoever may change the project's billing data (`billing_admin`,
    `owner`) may act; a viewer sees no button and gets 403 on the URL; another project's object is
    404. What the service refuses is shown, never a 500: on the form's field it names, otherwise as
    a message on the page the action returns to.
    """

    action_form_template = "admin/action_form.html"

    def object_label(self, obj: models.Model) -> str:
        """How the object is named in the titles and breadcrumbs of its pages."""
        return str(obj)

    def may_act(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        # ProjectScopedAdmin's rule, not the read-only admin's: the record is read-only as a form.
        return ProjectScopedAdmin.has_change_permission(self, request, obj)

    def _visible(self, request: HttpRequest, pk: int) -> models.Model:
        """The object, if it is of one of the user's projects (the queryset is scoped): else 404."""
        return get_object_or_404(self.get_queryset(request), pk=pk)

    def _acting_on(self, request: HttpRequest, pk: int) -> models.Model:
        obj = self._visible(request, pk)
        if not self.may_act(request, obj):
            raise PermissionDenied
        return obj

    def _return_url(self, obj: models.Model) -> str:
        """Where an action returns to: the object's page."""
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])

    def _done(self, request: HttpRequest, obj: models.Model, message: str) -> HttpResponse:
        messages.success(request, message)
        return HttpResponseRedirect(self._return_url(obj))

    def _refused(self, request: HttpRequest, obj: models.Model, error: DomainError) -> HttpResponse:
        messages.error(request, error.message)
        return HttpResponseRedirect(self._return_url(obj))

    def _run(self, request: HttpRequest, obj: models.Model, call: Callable[[], Any], success: str):
        try:
            call()
        except DomainError as exc:
            return self._refused(request, obj, exc)
        return self._done(request, obj, success)

    def _form_page(self, request: HttpRequest, obj: models.Model, form, title: str, button: str):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
            "original": obj,
            "original_label": self.object_label(obj),
            "button": button,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, self.action_form_template, context)

    def _form_view(
        self,
        request: HttpRequest,
        pk: int,
        form_class: type[forms.Form],
        act: Callable[[Any, dict[str, Any]], Any],
        *,
        success: str,
        title: str,
        button: str,
        form_kwargs: Callable[[Any], dict[str, Any]] | None = None,
    ) -> HttpResponse:
        """An action that asks for a form first (a reason, an amount…): `act(obj, cleaned_data)`.
        `title` may name the object as {obj} (its object_label); `form_kwargs(obj)` gives a form
        what it needs of it (defaults, choices)."""
        obj = self._acting_on(request, pk)
        form = form_class(request.POST or None, **(form_kwargs(obj) if form_kwargs else {}))
        if request.method == "POST" and form.is_valid():
            try:
                act(obj, form.cleaned_data)
            except DomainError as exc:
                if exc.param not in form.fields:
                    return self._refused(request, obj, exc)
                form.add_error(exc.param, exc.message)  # shown on the form, with what was typed
            else:
                return self._done(request, obj, success)
        return self._form_page(request, obj, form, title.format(obj=self.object_label(obj)), button)


class ProjectScopedInline(DecimalInputs, admin.StackedInline):
    """An inline that follows its parent's rules: visible and editable exactly when the parent
    object is, with related choices limited to the user's projects."""

    formset = SameProjectInlineFormSet

    def _parent_admin(self) -> admin.ModelAdmin:
        return self.admin_site._registry[self.parent_model]

    def has_view_permission(self, request, obj=None) -> bool:
        return self._parent_admin().has_view_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._parent_admin().has_change_permission(request, obj)

    def has_add_permission(self, request, obj=None) -> bool:
        return self._parent_admin().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._parent_admin().has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        return self._parent_admin().formfield_for_foreignkey(db_field, request, **kwargs)


class ProjectListFilter(admin.SimpleListFilter):
    """Filter by project, offering only the user's projects (Django's related-field filter would
    list every project's name to every staff user; its "related only" variant scans the table)."""

    title = "project"
    parameter_name = "project"

    def __init__(self, request, params, model, model_admin):
        self.project_path = getattr(model_admin, "project_path", "project")
        super().__init__(request, params, model, model_admin)

    def lookups(self, request, model_admin):
        projects = Project.objects.all()
        if not request.user.is_superuser:
            projects = projects.filter(pk__in=roles_for(request))
        return [(project.pk, project.name) for project in projects]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.project_path: self.value()})
        return queryset


class CalendarMonthFilter(admin.SimpleListFilter):
    """By the UTC calendar month a moment falls in: `?<parameter_name>=2026-11` (links from the
    dashboard use it). Offers the last 12 months; any month from 2000-01 to 2099-12 can be typed in
    the URL; anything else shows the list with the admin's bad-filter notice, never an error."""

    field: str  # the moment filtered on, e.g. "issued_at"
    MONTHS_OFFERED = 12

    def lookups(self, request, model_admin):
        months = recent_months(timezone.now(), self.MONTHS_OFFERED)
        return [(month_param(month), f"{month:%b %Y}") for month in months]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        month = month_parse(self.value())
        if month is None:
            raise IncorrectLookupParameters(f"{self.parameter_name}: {self.value()!r} is not a month YYYY-MM")
        start, end = month_span(month)
        return queryset.filter(**{f"{self.field}__gte": start, f"{self.field}__lt": end})


class ReadOnlyAdminMixin:
    """For records nobody edits in the admin: logs, events, finalized documents."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """Rows shown on their parent's page that nobody edits there (lines, phases, delivery logs):
    visible to whoever sees the parent."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return True


class CappedPaginator(Paginator):
    """Counts at most CAP rows, so list pages stay fast on tables with millions of rows.

    Beyond the cap the admin shows "10000+" pages' worth and the user narrows with filters.
    """

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP].count()
