"""Contracts: the signed document, the lines priced like plan charges, acceptance."""

import posixpath

from django.contrib import admin, messages
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from billing_site.admin import ProjectListFilter, ProjectScopedAdmin
from billing_site.errors import DomainError
from catalog import services
from catalog.admin.common import PricedItemInline, ReadOnlyDisplays
from catalog.forms import ContractForm
from catalog.models import (
    Contract,
    ContractLine,
    ContractStatus,
)


class ContractLineInline(PricedItemInline):
    model = ContractLine
    owner = "contract"
    extra = 1


@admin.register(Contract)
class ContractAdmin(ReadOnlyDisplays, ProjectScopedAdmin):
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
    # The file input's own link is to the download view; read-only, the same link alone.
    read_only_displays = {"document": "download"}
    readonly_fields = [
        "public_id",
        "status",
        "accepted_at",
        "accepted_by",
        "created_objects",
        "audit_trail",
    ]
    fieldsets = [
        (None, {"fields": ["project", "title", "document", "public_id", "status"]}),
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
        return format_html('<a href="{}">{}</a>', url, posixpath.basename(contract.document.name))

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
        """The signed PDF, to staff who may see the contract's project (another project's is 404),
        inline so the browser opens it, under its stored name (the uploaded one, with a suffix the
        storage adds when another contract's file had that name)."""
        contract = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_view_permission(request, contract) or not contract.document:
            raise Http404
        return FileResponse(
            contract.document.open("rb"),
            filename=posixpath.basename(contract.document.name),
            content_type="application/pdf",
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
