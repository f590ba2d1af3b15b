"""The API gateway: what every `/v1/` request goes through before and after its view.

In order: `/api/v1/…` is served as `/v1/…` (the prefix some billing APIs' clients are written
against); a chunked body is read in full (any path); text that cannot be stored (NUL) is refused
in the path and query; the body is decoded (gzip) and capped. Then, once Django has resolved the
URL (process_view: the route is resolved once per request, by Django), the API key is looked up
and the key's rate limit is counted in the same round trip (outside any transaction, so a
counter row is never held locked for the length of a request); and for POST/PATCH with an
`Idempotency-Key` to a route that takes the method, the key is claimed and the view runs in one
transaction with the storing of its response.
"""

import contextlib
import io
import zlib

from django.conf import settings
from django.core.handlers.exception import response_for_exception
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import AuthenticationFailed

from billing_site import idempotency
from billing_site.api.authentication import api_key_from_request
from billing_site.api.errors import error_response
from billing_site.ratelimit import API

IDEMPOTENT_METHODS = frozenset({"POST", "PATCH"})
# The methods whose body the API reads; others' bodies are ignored (no cap, no decoding, no 413).
BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The whole API answers under this prefix too. Rewritten here rather than routed twice, so the
# routes, the OpenAPI document and everything below are the /v1/ ones; `request.path` keeps what
# the client sent (links to the next page of a list stay under its prefix).
API_ALIAS_PREFIX = "/api/v1/"


class ApiGatewayMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(API_ALIAS_PREFIX):
            request.path_info = request.path_info.removeprefix("/api")
        problem = _read_chunked_body(request)
        if problem is not None:
            return problem
        if not request.path_info.startswith("/v1/"):
            return self.get_response(request)
        problem = _refuse_nul(request) or (_decode_body(request) if request.method in BODY_METHODS else None)
        if problem is not None:
            return problem
        response = self.get_response(request)
        limit = getattr(request, "_rate_limit", None)
        if limit is not None:
            for name, value in limit.headers().items():
                response[name] = value
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        """The route-dependent steps, on the route Django resolved: the rate limit's scope, and
        the idempotency claim around the view. None lets Django call the view."""
        if not request.path_info.startswith("/v1/"):
            return None
        view_class = getattr(view_func, "cls", None)
        try:
            api_key = api_key_from_request(request, scope=getattr(view_class, "rate_limit_scope", API))
        except AuthenticationFailed:
            return None  # the view's authentication answers 401 in the envelope
        if api_key is None:
            return None
        limit = request._rate_limit
        if limit.exceeded:
            return error_response(
                429,
                "rate_limited",
                f"Too many requests for this API key: {limit.limit} a minute. "
                f"Retry in {limit.retry_after} s.",
                headers={"Retry-After": str(limit.retry_after)},
            )
        key = request.headers.get("Idempotency-Key")
        if key is None or request.method not in IDEMPOTENT_METHODS or not _takes_method(view_func, request):
            return None
        return self._idempotent(request, api_key.project, key, view_func, view_args, view_kwargs)

    def _idempotent(self, request: HttpRequest, project, key: str, view_func, view_args, view_kwargs):
        # WSGI hands header values over as Latin-1; clients send UTF-8, and the limit is in
        # characters, as the schema's maxLength counts them.
        with contextlib.suppress(UnicodeError):
            key = key.encode("latin-1").decode("utf-8")
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or "\x00" in key:
            return error_response(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        claim = idempotency.idempotency_claim(
            project=project, key=key, fingerprint=idempotency.request_fingerprint(request)
        )
        if claim.outcome == "replay":
            return idempotency.idempotency_replay(claim.record)
        if claim.outcome == "reused":
            return error_response(
                409,
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request. Use a new key for a new request.",
                param="Idempotency-Key",
            )
        if claim.outcome == "in_use":
            return error_response(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed. Retry shortly.",
                param="Idempotency-Key",
            )
        record = claim.record
        with transaction.atomic():
            response = _call_view(request, view_func, view_args, view_kwargs)
            if 200 <= response.status_code < 300:
                redact = getattr(getattr(view_func, "cls", None), "idempotency_redact", ())
                idempotency.idempotency_complete(record=record, response=response, redact=redact)
            else:
                transaction.set_rollback(True)
        if response.status_code in idempotency.STORED_STATUSES:
            idempotency.idempotency_complete(record=record, response=response)
        elif not 200 <= response.status_code < 300:
            idempotency.idempotency_release(record=record)
        return response


def _call_view(request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse:
    """The view's response, rendered (its body is stored), as Django would make it: an exception
    becomes the error response (500) Django would answer with."""
    try:
        response = view_func(request, *view_args, **view_kwargs)
        if callable(getattr(response, "render", None)):
            response = response.render()
    except Exception as exc:
        response = response_for_exception(request, exc)
    return response


def _takes_method(view_func, request: HttpRequest) -> bool:
    """Whether the route has a handler for the method. Only then is an Idempotency-Key claimed: a
    PATCH to a POST-only route is 405 whatever key it carries."""
    method = request.method.lower()
    actions = getattr(view_func, "actions", None)  # a viewset route: method → action
    if actions is not None:
        return method in actions
    view_class = getattr(view_func, "cls", None)
    return view_class is not None and method in view_class.http_method_names and hasattr(view_class, method)


def _read_chunked_body(request: HttpRequest) -> HttpResponse | None:
    """Read a body sent with `Transfer-Encoding: chunked` (no Content-Length), so it is never
    taken for an empty one: Django reads exactly Content-Length bytes, which is none.

    A server that decodes chunked bodies says so with `wsgi.input_terminated` (gunicorn does):
    the input then ends where the body ends. Without it, the body cannot be read safely and the
    request is refused with 411, asking for a Content-Length.
    """
    if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    if not request.META.get("wsgi.input_terminated"):
        return error_response(
            411,
            "length_required",
            "This server cannot read a chunked body here; send the body with a Content-Length.",
        )
    limit = settings.API_MAX_BODY_BYTES
    try:
        body = request.META["wsgi.input"].read(limit + 1)
    except Exception:  # the server's chunk parser refused the framing (bad size, missing end, …)
        return error_response(400, "invalid_http_request", "The chunked body is malformed or truncated.")
    if len(body) > limit:
        return error_response(
            413, "request_too_large", f"The request body is larger than {limit} bytes (after decompression)."
        )
    request._body = body
    request._stream = io.BytesIO(body)
    request.META["CONTENT_LENGTH"] = str(len(body))
    return None


def _refuse_nul(request: HttpRequest) -> HttpResponse | None:
    """NUL can be sent percent-encoded (%00) but not stored or searched for: refused in the path
    and the query string of every API request."""
    query = request.GET.lists()
    if "\x00" in request.path or any("\x00" in key + "".join(values) for key, values in query):
        return error_response(400, "invalid_characters", "The path or query contains a NUL (%00) character.")
    return None


def _decode_body(request: HttpRequest) -> HttpResponse | None:
    """Cap the body at API_MAX_BODY_BYTES and undo `Content-Encoding: gzip`; an error response or None."""
    limit = settings.API_MAX_BODY_BYTES
    too_large = error_response(
        413, "request_too_large", f"The request body is larger than {limit} bytes (after decompression)."
    )
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return too_large
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in {"", "identity"}:
        return None
    if encoding != "gzip":
        return error_response(
            415, "unsupported_content_encoding", f"Content-Encoding '{encoding}' is not supported; use gzip."
        )
    # A gzip stream may hold several members, one after the other (RFC 1952): all are read, and
    # anything after the last that is not a member is refused rather than dropped.
    body, compressed = b"", request.body
    while True:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body += decompressor.decompress(compressed, limit + 1 - len(body))
        except zlib.error:
            return error_response(400, "invalid_gzip", "The body is not valid gzip.")
        if len(body) > limit or decompressor.unconsumed_tail:
            return too_large
        if not decompressor.eof:
            return error_response(400, "invalid_gzip", "The gzip body is truncated.")
        compressed = decompressor.unused_data
        if not compressed:
            break
    request._body = body
    request._stream = io.BytesIO(body)
    request.META["CONTENT_LENGTH"] = str(len(body))
    del request.META["HTTP_CONTENT_ENCODING"]
    return None
