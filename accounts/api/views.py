from datetime import timedelta

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api.serializers import (
    ApiKeyCreateSerializer,
    ApiKeyRollSerializer,
    ApiKeySerializer,
    ApiKeyWithSecretSerializer,
    ProjectSerializer,
)
from billing_site.api.views import ListRetrieveViewSet


class ApiKeyViewSet(mixins.DestroyModelMixin, ListRetrieveViewSet):
    """The project's API keys. Creating one needs `billing:update` and only grants scopes the
    calling key holds; the secret is in the creation and roll responses only."""

    serializer_class = ApiKeySerializer
    idempotency_redact = ("secret",)

    def get_project_queryset(self):
        return selectors.api_key_list(project=self.project)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyWithSecretSerializer})
    def create(self, request):
        payload = ApiKeyCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        api_key, secret = services.api_key_create(
            project=self.project, actor=request.auth, **payload.validated_data
        )
        api_key.secret = secret
        return Response(ApiKeyWithSecretSerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Roll an API key",
        request=ApiKeyRollSerializer,
        responses={201: ApiKeyWithSecretSerializer},
    )
    @action(detail=True, methods=["post"])
    def roll(self, request, id=None):
        """A new key with the same name and scopes, its secret in this response only. The rolled
        key keeps working for `expires_in` seconds (default 0: it stops now), then is refused as
        `api_key_expired`. Only an `active` key can be rolled (else 422 `api_key_not_active`), and
        only by a key holding all its scopes (else 422 `scope_not_held`)."""
        payload = ApiKeyRollSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        api_key, secret = services.api_key_roll(
            api_key=self.get_object(),
            expires_in=timedelta(seconds=payload.validated_data["expires_in"]),
            actor=request.auth,
        )
        api_key.secret = secret
        return Response(ApiKeyWithSecretSerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke an API key", responses={200: ApiKeySerializer})
    def destroy(self, request, id=None):
        api_key = services.api_key_revoke(api_key=self.get_object(), actor=request.auth)
        return Response(ApiKeySerializer(api_key).data)


class ProjectView(APIView):
    """The project the calling API key belongs to: its settings. Reading needs `billing:read`,
    changing `billing:update`. Stripe secrets are never shown, only whether they are set."""

    @extend_schema(summary="Show the project", responses={200: ProjectSerializer})
    def get(self, request):
        return Response(ProjectSerializer(request.auth.project).data)

    @extend_schema(
        summary="Change project settings", request=ProjectSerializer, responses={200: ProjectSerializer}
    )
    def patch(self, request):
        payload = ProjectSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        project = services.project_update(
            project=request.auth.project, changes=payload.validated_data, actor=request.auth
        )
        return Response(ProjectSerializer(project).data)
