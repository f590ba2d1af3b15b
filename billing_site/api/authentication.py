"""API-key authentication: `Authorization: Bearer <key>` or `X-Api-Key: <key>`."""

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from accounts.models import ApiKey, ApiKeyStatus
from accounts.selectors import api_key_for_secret
from accounts.services import api_key_touch

_UNSET = object()


def api_key_from_request(request: HttpRequest) -> ApiKey | None:
    """The request's API key; None if none was presented; AuthenticationFailed if it is bad.

    The result is kept on the request, so the gateway middleware (rate limits, idempotency) and
    DRF's authentication share one lookup.
    """
    cached = getattr(request, "_api_key", _UNSET)
    if cached is _UNSET:
        try:
            cached = _lookup(request)
        except exceptions.AuthenticationFailed as exc:
            cached = exc
        request._api_key = cached
    if isinstance(cached, exceptions.AuthenticationFailed):
        raise cached
    return cached


def _lookup(request: HttpRequest) -> ApiKey | None:
    authorization = request.headers.get("Authorization", "")
    secret = request.headers.get("X-Api-Key", "").strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise exceptions.AuthenticationFailed(
                "The Authorization header must be 'Bearer <api key>'.", code="invalid_authorization_header"
            )
        secret = value.strip()
    if not secret:
        return None
    api_key = api_key_for_secret(secret)
    if api_key is None:
        raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
    status = api_key.status
    if status == ApiKeyStatus.REVOKED:
        raise exceptions.AuthenticationFailed("This API key has been revoked.", code="api_key_revoked")
    if status == ApiKeyStatus.EXPIRED:
        raise exceptions.AuthenticationFailed(
            f"This API key was rolled and expired at {api_key.expires_at:%Y-%m-%dT%H:%M:%SZ}; "
            "use the key that replaced it.",
            code="api_key_expired",
        )
    api_key_touch(api_key=api_key)
    return api_key


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        api_key = api_key_from_request(request._request)
        return None if api_key is None else (api_key, api_key)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="billable"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = ["BearerAuth", "ApiKeyAuth"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api key>"},
            {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        ]
