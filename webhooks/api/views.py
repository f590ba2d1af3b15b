import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from billing_site.api.filters import CreatedFilterSet
from billing_site.api.views import ListRetrieveViewSet, ProjectScopedViewSet, ServiceViewSet
from webhooks import selectors, services
from webhooks.api.serializers import (
    DeliverySerializer,
    EventSerializer,
    RecoverSerializer,
    RecoverySerializer,
    RedeliverSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookEndpointWriteSerializer,
)
from webhooks.models import Delivery, DeliveryStatus, WebhookEndpoint


@extend_schema_field(OpenApiTypes.STR)
class EventTypeFilter(django_filters.CharFilter):
    """Comma-separated types; a trailing `.*` matches a family (`invoice.*`)."""

    def filter(self, qs, value):
        if not value:
            return qs
        types = [part.strip() for part in value.split(",") if part.strip()]
        return qs.filter(selectors.event_types_query(types, field=self.field_name))


class ActivityFilter(CreatedFilterSet):
    type = EventTypeFilter(help_text="e.g. `invoice.paid,usage.recorded` or `invoice.*`")
    object = django_filters.CharFilter(
        field_name="object_id", help_text="The ID of the object, e.g. `cus_…`."
    )


class ActivityViewSet(ListRetrieveViewSet):
    """Everything that happened in the project, newest first: the events webhooks deliver."""

    serializer_class = EventSerializer
    filterset_class = ActivityFilter

    def get_project_queryset(self):
        return selectors.event_list(project=self.project)


class WebhookEndpointFilter(CreatedFilterSet):
    class Meta:
        model = WebhookEndpoint
        fields = ["enabled"]


class WebhookEndpointViewSet(ServiceViewSet):
    """Where the project's events are sent, signed as Standard Webhooks. The signing secret is in
    the responses of create and rotate-secret only."""

    serializer_class = WebhookEndpointSerializer
    create_serializer_class = WebhookEndpointWriteSerializer
    filterset_class = WebhookEndpointFilter
    idempotency_redact = ("secret",)

    def get_serializer_class(self):
        if self.action in {"create", "rotate_secret"}:
            return WebhookEndpointWithSecretSerializer
        return super().get_serializer_class()

    def get_project_queryset(self):
        return selectors.webhook_endpoint_list(project=self.project)

    def create_object(self, data):
        return services.webhook_endpoint_create(project=self.project, actor=self.request.auth, **data)

    def update_object(self, endpoint, changes):
        return services.webhook_endpoint_update(endpoint=endpoint, changes=changes, actor=self.request.auth)

    @extend_schema(summary="Delete, with its deliveries", responses={204: None})
    def destroy(self, request, id=None):
        services.webhook_endpoint_delete(endpoint=self.get_object(), actor=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, summary="Rotate the signing secret")
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, id=None):
        """A new secret; the old one keeps signing beside it for 24 hours."""
        endpoint = services.webhook_endpoint_rotate_secret(endpoint=self.get_object(), actor=request.auth)
        return Response(self.get_serializer(endpoint).data)

    @extend_schema(
        request=RedeliverSerializer, responses={201: DeliverySerializer}, summary="Redeliver an event"
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request, id=None):
        """Send an event to this endpoint again, as a new delivery with the same `webhook-id`,
        whatever the endpoint's event-type filter."""
        endpoint = self.get_object()
        data = self.validated(RedeliverSerializer, request.data)
        delivery = services.webhook_event_redeliver(
            event=data["event"], endpoint=endpoint, actor=request.auth
        )
        delivery = selectors.webhook_delivery_list(endpoint=endpoint).get(pk=delivery.pk)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=RecoverSerializer,
        responses={202: RecoverySerializer},
        summary="Recover failed deliveries since a time",
    )
    @action(detail=True, methods=["post"])
    def recover(self, request, id=None):
        """Send again, once, every event since `since` whose deliveries to this endpoint all failed
        (after an outage, or after enabling it again). Events that have a pending or succeeded
        delivery are skipped, so a second call sends nothing twice. Accepted: the new deliveries are
        sent in the background, in the order the events happened."""
        endpoint = self.get_object()
        data = self.validated(RecoverSerializer, request.data)
        recovery = services.webhook_endpoint_recover(
            endpoint=endpoint, since=data["since"], actor=request.auth
        )
        return Response(RecoverySerializer(recovery).data, status=status.HTTP_202_ACCEPTED)


class DeliveryFilter(CreatedFilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event_type = EventTypeFilter(field_name="event__type", help_text="e.g. `invoice.paid` or `invoice.*`")
    event = django_filters.CharFilter(field_name="event__public_id", help_text="An event ID (`msg_…`).")

    class Meta:
        model = Delivery
        fields = ["status"]


@extend_schema(
    parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="The endpoint's ID (`we_…`).")]
)
class WebhookDeliveryViewSet(mixins.ListModelMixin, ProjectScopedViewSet):
    """The deliveries of one endpoint, newest first, each with every attempt."""

    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilter

    def get_project_queryset(self):
        endpoint = (
            selectors.webhook_endpoint_list(project=self.project).filter(public_id=self.kwargs["id"]).first()
        )
        if endpoint is None:
            raise NotFound(f"No such webhook endpoint: '{self.kwargs['id']}'.")
        return selectors.webhook_delivery_list(endpoint=endpoint)
