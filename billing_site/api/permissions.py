from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import Scope


def required_scope(request, view) -> str:
    """The scope a request needs: the view's `required_scopes[METHOD]`, else read for safe methods
    and update for the rest."""
    overrides = getattr(view, "required_scopes", {})
    if request.method in overrides:
        return overrides[request.method]
    return Scope.BILLING_READ if request.method in SAFE_METHODS else Scope.BILLING_UPDATE


class HasScope(BasePermission):
    """A valid API key is required, and it must hold the scope the request needs (else 403)."""

    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if api_key is None:
            raise exceptions.NotAuthenticated(
                "No API key. Send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'.",
                code="missing_api_key",
            )
        scope = required_scope(request, view)
        if not api_key.has_scope(scope):
            raise exceptions.PermissionDenied(
                f"This API key lacks the '{scope}' scope.", code="insufficient_scope"
            )
        return True
