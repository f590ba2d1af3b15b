"""Per-API-key request counters in fixed one-minute windows.

With REDIS_URL set the counters live in Redis (INCR + EXPIRE); without it, in one database row
per key and scope (an upsert), so limits are exact across web processes either way. If Redis is
unreachable the limiter lets requests through and logs: an outage of the limiter must not become
an outage of the API.
"""

import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.db import connection

from accounts.models import ApiKey

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


def rate_limit_hit(*, api_key: ApiKey, scope: str) -> RateLimitStatus:
    """Count one request for the key in this window and say whether it is within the limit."""
    project = api_key.project
    limit = project.ingest_rate_limit_per_minute if scope == INGEST else project.api_rate_limit_per_minute
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    reset = (window + 1) * WINDOW_SECONDS
    hits = _hit(f"{api_key.pk}:{scope}", window)
    retry_after = max(1, int(reset - now + 0.999)) if hits > limit else 0
    return RateLimitStatus(limit=limit, remaining=max(0, limit - hits), reset=reset, retry_after=retry_after)


def _hit(bucket: str, window: int) -> int:
    if settings.REDIS_URL:
        return _hit_redis(bucket, window)
    return _hit_database(bucket, window)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def _hit_redis(bucket: str, window: int) -> int:
    key = f"billable:ratelimit:{bucket}:{window}"
    try:
        pipe = _redis().pipeline()
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS * 2)
        hits, _ = pipe.execute()
    except redis.RedisError:
        logger.warning("rate limiter: Redis unreachable, request allowed", exc_info=True)
        return 0
    return int(hits)


_UPSERT = """
    INSERT INTO billing_site_ratelimitcounter (bucket, window_start, hits) VALUES (%s, %s, 1)
    ON CONFLICT (bucket) DO UPDATE SET
        hits = CASE WHEN billing_site_ratelimitcounter.window_start = excluded.window_start
                    THEN billing_site_ratelimitcounter.hits + 1 ELSE 1 END,
        window_start = excluded.window_start
    RETURNING hits
"""


def _hit_database(bucket: str, window: int) -> int:
    # One atomic statement on both PostgreSQL and SQLite (3.35+): no read-then-write race.
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [bucket, window])
        return cursor.fetchone()[0]
