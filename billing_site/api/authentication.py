"""API-key authentication: `Authorization: Bearer <key>` or `X-Api-Key: <key>`."""

import copy
import time
from dataclasses import dataclass

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from accounts.models import ApiKey, ApiKeyStatus
from accounts.selectors import api_key_for_secret_hash, hash_secret
from accounts.services import api_key_touch
from billing_site.ratelimit import project_version, rate_limit_hit

_UNSET = object()
# A cached key is reloaded at least this often, whatever its version says: the bound on how long
# a bump that never happened (a process killed between its commit and its Redis bump, Redis
# unreachable for the bump only) can leave a change unseen.
CACHE_SECONDS = 60


@dataclass(frozen=True)
class _Cached:
    api_key: ApiKey  # with its project; never handed out itself (requests get copies)
    version: int | bytes | None  # the project's version read before the key was loaded; None: unknown
    loaded_at: float  # time.monotonic()


# Per process: the SHA-256 of a secret → the key as last loaded. Found keys only, so its size is
# bounded by the keys that exist, not by the secrets clients try.
_cache: dict[str, _Cached] = {}


def api_key_cache_clear() -> None:
    _cache.clear()


def api_key_from_request(request: HttpRequest, *, scope: str | None = None) -> ApiKey | None:
    """The request's API key; None if none was presented; AuthenticationFailed if it is bad.

    With a `scope`, the request is also counted against the key's rate limit of that scope (the
    gateway does this; `request._rate_limit` holds the outcome). The result is kept on the
    request, so the gateway middleware (rate limits, idempotency) and DRF's authentication share
    one lookup.
    """
    cached = getattr(request, "_api_key", _UNSET)
    if cached is _UNSET:
        try:
            cached = _lookup(request, scope)
        except exceptions.AuthenticationFailed as exc:
            cached = exc
        request._api_key = cached
    if isinstance(cached, exceptions.AuthenticationFailed):
        raise cached
    return cached


def _secret(request: HttpRequest) -> str:
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise exceptions.AuthenticationFailed(
                "The Authorization header must be 'Bearer <api key>'.", code="invalid_authorization_header"
            )
        return value.strip()
    return request.headers.get("X-Api-Key", "").strip()


def _lookup(request: HttpRequest, scope: str | None) -> ApiKey | None:
    secret = _secret(request)
    if not secret:
        return None
    digest = hash_secret(secret)
    entry = _cache.get(digest)
    if entry is not None and time.monotonic() - entry.loaded_at >= CACHE_SECONDS:
        entry = None
    api_key = None if entry is not None else _load(digest)
    known = entry.api_key if entry is not None else api_key
    # Ordering invariant: the version is read BEFORE the key is loaded, and a writer bumps it
    # AFTER its change is committed (or, in the database, in its transaction). So a key loaded
    # under a version is at least as new as that version: a process that read the old version may
    # have loaded the old row, and reloads on its next request, when it reads the new one.
    if scope is not None:
        hit = rate_limit_hit(api_key_id=known.pk, project_id=known.project_id, scope=scope)
        version = hit.version
    else:
        hit, version = None, project_version(project_id=known.project_id)
    if version is None:  # unknown (Redis unreachable): the database decides, nothing is cached
        _cache.pop(digest, None)
        api_key = api_key or _load(digest)
    elif entry is not None and entry.version == version:
        api_key = entry.api_key
    elif entry is not None:
        api_key = _load(digest)  # loaded after the version was read: cached under it
        _cache[digest] = _Cached(api_key=api_key, version=version, loaded_at=time.monotonic())
    else:
        # Loaded before the version was read, so not known to be as new as it: kept to be
        # checked (reloaded) on the key's next request.
        _cache[digest] = _Cached(api_key=api_key, version=None, loaded_at=time.monotonic())
    status = api_key.status
    if status == ApiKeyStatus.REVOKED:
        raise exceptions.AuthenticationFailed("This API key has been revoked.", code="api_key_revoked")
    if status == ApiKeyStatus.EXPIRED:
        raise exceptions.AuthenticationFailed(
            f"This API key was rolled and expired at {api_key.expires_at:%Y-%m-%dT%H:%M:%SZ}; "
            "use the key that replaced it.",
            code="api_key_expired",
        )
    api_key_touch(api_key=api_key)  # on the cached instance: once a minute per key and process
    if hit is not None:
        request._rate_limit = hit.status(project=api_key.project, scope=scope)
    return _copy(api_key)


def _load(digest: str) -> ApiKey:
    api_key = api_key_for_secret_hash(digest)
    if api_key is None:
        _cache.pop(digest, None)  # a deleted key
        raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
    return api_key


def _copy(api_key: ApiKey) -> ApiKey:
    """A request's own copy of a cached key and its project: views may change what they are given,
    and threads share the cache."""
    own = copy.copy(api_key)
    own.project = copy.copy(api_key.project)
    return own


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
