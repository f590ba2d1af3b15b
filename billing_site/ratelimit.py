"""Per-API-key request counters in fixed one-minute windows, and the project versions that tell
authentication whether its per-process cache of API keys is current (billing_site.api.authentication).

With REDIS_URL set the counters live in Redis (INCR + EXPIRE); without it, in one database row
per key and scope (an upsert), so limits are exact across web processes either way. If Redis is
unreachable the limiter lets requests through and logs: an outage of the limiter must not become
an outage of the API.

A request's count and its project's version are one round trip: one Redis pipeline, or one
database statement. The version changes whenever the project or one of its API keys changes
(project_version_bump). In Redis it is an opaque token that a bump deletes and the next reader
replaces with a new random one, so a Redis that loses its data can never hand out a token a
process cached a key under before; in the database it is a counter (accounts.ProjectVersion).
"""

import logging
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.db import connection, transaction

from accounts.models import Project

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
INGEST = "ingest"
API = "api"


@dataclass(frozen=True)
class RateLimitStatus:
    limit: int
    remaining: int
    reset: int  # unix time the window ends
    retry_after: int  # seconds; 0 when allowed

    @property
    def exceeded(self) -> bool:
        return self.retry_after > 0

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


@dataclass(frozen=True)
class RateLimitHit:
    """One request counted: the key's hits in this window, and its project's version as read in
    the same round trip (None when unknown: Redis unreachable)."""

    now: float
    hits: int
    version: int | bytes | None

    def status(self, *, project: Project, scope: str) -> RateLimitStatus:
        """Whether the hits are within the project's limit for the scope."""
        limit = project.ingest_rate_limit_per_minute if scope == INGEST else project.api_rate_limit_per_minute
        reset = (int(self.now // WINDOW_SECONDS) + 1) * WINDOW_SECONDS
        retry_after = max(1, int(reset - self.now + 0.999)) if self.hits > limit else 0
        return RateLimitStatus(
            limit=limit, remaining=max(0, limit - self.hits), reset=reset, retry_after=retry_after
        )


def rate_limit_hit(*, api_key_id: int, project_id: int, scope: str) -> RateLimitHit:
    """Count one request for the key in this window and read its project's version."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    hit = _hit_redis if settings.REDIS_URL else _hit_database
    hits, version = hit(f"{api_key_id}:{scope}", window, project_id)
    return RateLimitHit(now=now, hits=hits, version=version)


def project_version(*, project_id: int) -> int | bytes | None:
    """The project's version alone (authentication outside the gateway: nothing is counted)."""
    if settings.REDIS_URL:
        try:
            return _version_pipeline(_redis().pipeline(), project_id).execute()[-1]
        except redis.RedisError:
            logger.warning("API key cache: Redis unreachable, key looked up", exc_info=True)
            return None
    with connection.cursor() as cursor:
        cursor.execute(_VERSION, [project_id])
        return cursor.fetchone()[0]


def project_version_bump(*, project_id: int) -> None:
    """Invalidate every process's cached API keys of the project: call it with every change to a
    project or its keys that the request path reads (status, scopes, limits, settings).

    In the database the bump is part of the change's transaction. In Redis it runs after the
    commit: bumped earlier, a reader could read the new token, then the row as it was before the
    commit, and keep the old row under the new token.
    """
    if settings.REDIS_URL:
        transaction.on_commit(lambda: _bump_redis(project_id), robust=True)
        return
    with connection.cursor() as cursor:
        cursor.execute(_BUMP, [project_id])


def _version_key(project_id: int) -> str:
    return f"billable:apikeys:version:{project_id}"


# A token outlives no day: an expired one is replaced as a bumped one is (one reload per process).
VERSION_TTL_SECONDS = 86_400


def _version_pipeline(pipe: redis.client.Pipeline, project_id: int) -> redis.client.Pipeline:
    key = _version_key(project_id)
    pipe.set(key, secrets.token_hex(8), nx=True, ex=VERSION_TTL_SECONDS)
    pipe.get(key)
    return pipe


def _bump_redis(project_id: int) -> None:
    try:
        _redis().delete(_version_key(project_id))
    except redis.RedisError:
        # Processes that cannot reach Redis do not use their caches; those that can see the bump
        # lost until their entries age out (billing_site.api.authentication.CACHE_SECONDS).
        logger.error("API key cache: Redis unreachable, version of project %s not bumped", project_id)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def _hit_redis(bucket: str, window: int, project_id: int) -> tuple[int, bytes | None]:
    key = f"billable:ratelimit:{bucket}:{window}"
    try:
        pipe = _redis().pipeline()
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS * 2)
        hits, _, _, version = _version_pipeline(pipe, project_id).execute()
    except redis.RedisError:
        logger.warning("rate limiter: Redis unreachable, request allowed", exc_info=True)
        return 0, None
    return int(hits), version


_VERSION = "SELECT COALESCE((SELECT version FROM accounts_projectversion WHERE project_id = %s), 0)"
_UPSERT = """
    INSERT INTO billing_site_ratelimitcounter (bucket, window_start, hits) VALUES (%s, %s, 1)
    ON CONFLICT (bucket) DO UPDATE SET
        hits = CASE WHEN billing_site_ratelimitcounter.window_start = excluded.window_start
                    THEN billing_site_ratelimitcounter.hits + 1 ELSE 1 END,
        window_start = excluded.window_start
    RETURNING hits, COALESCE((SELECT version FROM accounts_projectversion WHERE project_id = %s), 0)
"""
_BUMP = """
    INSERT INTO accounts_projectversion (project_id, version) VALUES (%s, 1)
    ON CONFLICT (project_id) DO UPDATE SET version = accounts_projectversion.version + 1
"""


def _hit_database(bucket: str, window: int, project_id: int) -> tuple[int, int]:
    # One atomic statement on both PostgreSQL and SQLite (3.35+): no read-then-write race.
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [bucket, window, project_id])
        hits, version = cursor.fetchone()
        return hits, version
