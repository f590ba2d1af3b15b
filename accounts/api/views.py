from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.response import Response

from accounts import selectors, services
from accounts.api.serializers import ApiKeyCreateSerializer, ApiKeySerializer, ApiKeyWithSecretSerializer
from billing_site.api.views import ListRetrieveViewSet


class ApiKeyViewSet(mixins.DestroyModelMixin, ListRetrieveViewSet):
    """The project's API keys. Creating one needs `billing:update` and only grants scopes the
    calling key holds; the secret is in the creation response only."""

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

    @extend_schema(summary="Revoke an API key", responses={200: ApiKeySerializer})
    def destroy(self, request, id=None):
        api_key = services.api_key_revoke(api_key=self.get_object(), actor=request.auth)
        return Response(ApiKeySerializer(api_key).data)
