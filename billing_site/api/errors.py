"""The one error envelope, for every error the API returns.

    {"error": {"type": "invalid_request", "code": "value_not_integer",
               "message": "…", "param": "events[3].value"}}

`code` is stable and machine-readable; `param` names the field at fault (`null` when none);
validation failures with several faults also list them all under `errors`.
"""

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings

from billing_site.errors import DomainError

logger = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request",
    405: "invalid_request",
    406: "invalid_request",
    409: "conflict",
    411: "invalid_request",
    413: "invalid_request",
    414: "invalid_request",
    415: "invalid_request",
    417: "invalid_request",
    431: "invalid_request",
    422: "invalid_state",
    429: "rate_limit_error",
}

# DRF's exception classes → our codes, where DRF's own code is not specific enough.
_CODES = {
    exceptions.ParseError: "invalid_json",
    exceptions.NotAuthenticated: "missing_api_key",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


def envelope(
    *,
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    extra: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
    type: str | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": type or ERROR_TYPES.get(status, "api_error"),
        "code": code,
        "message": message,
        "param": param,
    }
    error.update(extra or {})
    if errors and len(errors) > 1:
        error["errors"] = errors
    return {"error": error}


def error_response(status: int, code: str, message: str, **kwargs: Any) -> JsonResponse:
    """The envelope as a plain Django response, for middleware and URL-level handlers."""
    headers = kwargs.pop("headers", None)
    return JsonResponse(
        envelope(status=status, code=code, message=message, **kwargs),
        status=status,
        headers=headers,
        json_dumps_params={"separators": (",", ":")},
    )


def flatten_errors(detail: Any, path: str = "") -> list[dict[str, Any]]:
    """DRF's nested error detail → a flat list of {param, code, message}.

    Paths use dots for objects and brackets for lists: `events[3].value`, `billing_address.country`.
    """
    if isinstance(detail, dict):
        found = []
        for key, value in detail.items():
            if key == api_settings.NON_FIELD_ERRORS_KEY:
                found += flatten_errors(value, path)
            elif isinstance(key, int):  # ListField reports items by index
                found += flatten_errors(value, f"{path}[{key}]")
            else:
                found += flatten_errors(value, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            return [_one_error(item, path) for item in detail]
        found = []
        for index, item in enumerate(detail):
            found += flatten_errors(item, f"{path}[{index}]")
        return found
    return [_one_error(detail, path)]


def _one_error(detail: Any, path: str) -> dict[str, Any]:
    code = getattr(detail, "code", None) or "invalid"
    return {"param": path or None, "code": code, "message": str(detail)}


def _validation_response(errors: list[dict[str, Any]]) -> Response:
    if not errors:
        errors = [{"param": None, "code": "invalid", "message": "Invalid request."}]
    first = errors[0]
    return Response(envelope(status=400, errors=errors, **first), status=400)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's exception handler: domain errors and DRF errors alike → the envelope.

    Unexpected exceptions return None, so DRF re-raises them and Django's handler500 answers
    with the envelope after logging the traceback.
    """
    if isinstance(exc, DomainError):
        return Response(
            envelope(
                status=exc.status,
                type=exc.type,
                code=exc.code,
                message=exc.message,
                param=exc.param,
                extra=exc.extra,
            ),
            status=exc.status,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exceptions.as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        return _validation_response(flatten_errors(exc.detail))
    if not isinstance(exc, exceptions.APIException):
        return None

    headers = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    detail = exc.detail
    own_code = detail.code if isinstance(detail, exceptions.ErrorDetail) else None
    code = own_code if own_code and own_code != exc.default_code else _CODES.get(type(exc), exc.default_code)
    return Response(
        envelope(status=exc.status_code, code=code, message=str(detail)),
        status=exc.status_code,
        headers=headers,
    )
