from django.core.exceptions import DisallowedHost, TooManyFieldsSent
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Project
from billing_site.api.errors import error_response


class ProjectScopedViewSet(viewsets.GenericViewSet):
    """Base for every object route: objects are looked up by public ID within the key's project,
    so an object of another project is simply not found (404, never 403)."""

    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    lookup_value_regex = "[A-Za-z0-9_]+"

    @property
    def project(self) -> Project:
        return self.request.auth.project

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no key
            return self.get_serializer_class().Meta.model.objects.none()
        return self.get_project_queryset()

    def get_project_queryset(self):
        """The objects of `self.project` this route serves (from a selector)."""
        raise NotImplementedError

    def filter_queryset(self, queryset):
        # Query filters narrow lists; an object's own route finds it whatever the list defaults
        # hide (archived, superseded or private objects).
        if self.detail:
            return queryset
        return super().filter_queryset(queryset)

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            name = self.get_queryset().model._meta.verbose_name
            raise NotFound(f"No such {name}: '{self.kwargs.get(self.lookup_url_kwarg)}'.") from None


class ListRetrieveViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    pass


class ServiceViewSet(ListRetrieveViewSet):
    """List, retrieve, create and PATCH, where writes go through services.

    A write is validated by `create_serializer_class` / `update_serializer_class` (shapes only),
    handed to `create_object` / `update_object` (which call a service), and answered with
    `serializer_class`. PUT is not offered: PATCH changes what it names and nothing else.
    """

    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    create_serializer_class: type[serializers.Serializer]
    update_serializer_class: type[serializers.Serializer] | None = None

    def validated(self, serializer_class, data, **kwargs) -> dict:
        payload = serializer_class(data=data, context=self.get_serializer_context(), **kwargs)
        payload.is_valid(raise_exception=True)
        return payload.validated_data

    def create(self, request: Request) -> Response:
        obj = self.create_object(self.validated(self.create_serializer_class, request.data))
        return Response(self.get_serializer(obj).data, status=201)

    def partial_update(self, request: Request, id: str | None = None) -> Response:
        serializer_class = self.update_serializer_class or self.create_serializer_class
        changes = self.validated(serializer_class, request.data, partial=True)
        obj = self.update_object(self.get_object(), changes)
        return Response(self.get_serializer(obj).data)

    def create_object(self, data: dict):
        raise NotImplementedError

    def update_object(self, obj, changes: dict):
        raise NotImplementedError


class HealthView(APIView):
    """Liveness and readiness: 200 when the database answers, 503 when it does not."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer(
            "Health", {"status": serializers.CharField(), "database": serializers.CharField()}
        ),
        auth=[],
    )
    def get(self, request: Request) -> Response:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return Response({"status": "unavailable", "database": "unreachable"}, status=503)
        return Response({"status": "ok", "database": "ok"})


def _is_html_page(request: HttpRequest) -> bool:
    return request.path_info.startswith(("/admin/", "/docs/"))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """What Django refuses before any view: a Host it does not serve, too many query parameters."""
    if _is_html_page(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, DisallowedHost):
        return error_response(400, "invalid_host", "The Host header names a host this server does not serve.")
    if isinstance(exception, TooManyFieldsSent):
        return error_response(
            400, "too_many_parameters", "The request has more parameters than the server reads."
        )
    return error_response(400, "bad_request", "The request could not be read.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_html_page(request):
        return defaults.page_not_found(request, exception)
    return error_response(404, "not_found", f"No route for {request.method} {request.path}.")


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_html_page(request):
        return defaults.server_error(request)
    return error_response(500, "internal_error", "Something went wrong on our side. It has been logged.")
