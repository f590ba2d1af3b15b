import django_filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from billing_site.api.actions import ArchiveDeleteMixin
from billing_site.api.filters import ArchivedFilterSet, CreatedFilterSet, StrictBooleanFilter
from billing_site.api.views import ListRetrieveViewSet, ServiceViewSet
from catalog import selectors, services
from catalog.api.filters import CustomerRefFilter
from catalog.api.serializers import (
    BillableItemSerializer,
    ContractSerializer,
    CustomerSerializer,
    PlanSerializer,
    PlanUpdateSerializer,
    PlanWriteSerializer,
    ProductSerializer,
)
from catalog.models import Contract, Customer, Plan, Product
from subscriptions.selectors import customer_billable_items


class ProductFilter(ArchivedFilterSet):
    class Meta:
        model = Product
        fields = ["code"]


class ProductViewSet(ArchiveDeleteMixin, ServiceViewSet):
    serializer_class = ProductSerializer
    create_serializer_class = ProductSerializer
    filterset_class = ProductFilter

    def get_project_queryset(self):
        return selectors.product_list(project=self.project)

    def create_object(self, data):
        return services.product_create(project=self.project, actor=self.request.auth, **data)

    def update_object(self, product, changes):
        return services.product_update(product=product, changes=changes, actor=self.request.auth)

    def archive_object(self, product):
        return services.product_archive(product=product, actor=self.request.auth)

    def delete_object(self, product):
        services.product_delete(product=product, actor=self.request.auth)


class PlanFilter(ArchivedFilterSet):
    product = django_filters.CharFilter(field_name="product__public_id", help_text="A product ID.")
    all_versions = StrictBooleanFilter(
        method="include_all_versions",
        help_text="Include versions replaced by a newer one (default: latest only).",
    )
    private = StrictBooleanFilter(
        field_name="is_private", help_text="Private plans (contracts, overrides) are listed only with true."
    )

    class Meta:
        model = Plan
        fields = ["code", "currency", "interval"]

    def include_all_versions(self, queryset, name, value):
        return queryset  # applied in filter_queryset, which also sees the parameter's absence

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if not self.form.cleaned_data.get("all_versions"):
            queryset = queryset.filter(superseded=False)
        if self.form.cleaned_data.get("private") is None:
            queryset = queryset.filter(is_private=False)
        return queryset


class PlanViewSet(ArchiveDeleteMixin, ServiceViewSet):
    """Plans with their charges. A PATCH that changes prices of a plan in use answers with a new
    version (new `id`, `version` + 1, `previous_version` set); subscriptions keep theirs."""

    serializer_class = PlanSerializer
    create_serializer_class = PlanWriteSerializer
    update_serializer_class = PlanUpdateSerializer
    filterset_class = PlanFilter

    def get_project_queryset(self):
        return selectors.plan_list(project=self.project)

    def create_object(self, data):
        return services.plan_create(project=self.project, actor=self.request.auth, **data)

    def update_object(self, plan, changes):
        updated = services.plan_update(plan=plan, changes=changes, actor=self.request.auth)
        return self.get_project_queryset().get(pk=updated.pk)

    def archive_object(self, plan):
        return services.plan_archive(plan=plan, actor=self.request.auth)

    def delete_object(self, plan):
        services.plan_delete(plan=plan, actor=self.request.auth)


class CustomerFilter(CreatedFilterSet):
    email = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Customer
        fields = ["external_id", "email", "currency"]


class CustomerViewSet(ServiceViewSet):
    """Customers. `{id}` in a path is the customer's ID (`cus_…`) or your own external_id; lists
    filter by `?external_id=` and `?email=`."""

    serializer_class = CustomerSerializer
    create_serializer_class = CustomerSerializer
    lookup_value_regex = "[^/]+"  # external ids may hold any character but a slash
    filterset_class = CustomerFilter

    def get_project_queryset(self):
        return selectors.customer_list(project=self.project)

    def get_object(self):
        """`{id}` is the customer's ID or your own external_id."""
        customer = selectors.customer_by_reference(project=self.project, reference=self.kwargs["id"])
        if customer is None:
            raise NotFound(f"No such customer: '{self.kwargs['id']}'.")
        self.check_object_permissions(self.request, customer)
        return customer

    def create_object(self, data):
        return services.customer_create(project=self.project, actor=self.request.auth, **data)

    def update_object(self, customer, changes):
        return services.customer_update(customer=customer, changes=changes, actor=self.request.auth)

    @extend_schema(
        summary="Delete (only without subscriptions, usage, invoices or payment methods)",
        responses={204: None},
    )
    def destroy(self, request, id=None):
        services.customer_delete(customer=self.get_object(), actor=request.auth)
        return Response(status=204)

    @extend_schema(
        summary="Billable items",
        responses=inline_serializer("BillableItemList", {"results": BillableItemSerializer(many=True)}),
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def items(self, request, id=None):
        """The base fees, fixed fees and metered charges of the customer's active subscriptions."""
        items = customer_billable_items(customer=self.get_object())
        return Response({"results": BillableItemSerializer(items, many=True).data})


class ContractFilter(CreatedFilterSet):
    customer = CustomerRefFilter()

    class Meta:
        model = Contract
        fields = ["status"]


class ContractViewSet(ListRetrieveViewSet):
    """Contracts are entered and accepted in the admin; the API reads them."""

    serializer_class = ContractSerializer
    filterset_class = ContractFilter

    def get_project_queryset(self):
        return selectors.contract_list(project=self.project).prefetch_related("lines__meter")
