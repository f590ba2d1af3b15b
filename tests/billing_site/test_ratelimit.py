import os
from datetime import UTC, datetime, timedelta

import pytest
import redis
import time_machine
from django.test import override_settings

from accounts.models import Scope
from billing_site import ratelimit
from tests.conftest import api_client, require

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Mid-minute, so a test's requests all fall in one window.
NOON = datetime(2026, 3, 2, 12, 0, 20, tzinfo=UTC)


@pytest.fixture(params=["database", "redis"])
def backend(request):
    if request.param == "database":
        with override_settings(REDIS_URL=""):
            yield
        return
    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
        reachable = True
    except redis.RedisError:
        reachable = False
    require(reachable, f"Redis at {REDIS_URL} (start redis-server, or set REDIS_URL)")
    ratelimit._redis.cache_clear()
    with override_settings(REDIS_URL=REDIS_URL):
        yield
    ratelimit._redis.cache_clear()


@time_machine.travel(NOON, tick=False)
def test_exceeding_the_limit_is_429_with_retry_after(project, backend):
    project.api_rate_limit_per_minute = 3
    project.save()
    client = api_client(project)

    responses = [client.get("/v1/api-keys") for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r["X-RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    limited = responses[-1]
    assert limited["Retry-After"] == "40"
    assert limited["X-RateLimit-Limit"] == "3"
    assert limited["X-RateLimit-Reset"] == str(int(NOON.timestamp()) + 40)
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.json()["error"]["code"] == "rate_limited"


def test_the_next_minute_starts_afresh(project, backend):
    project.api_rate_limit_per_minute = 1
    project.save()
    client = api_client(project)
    with time_machine.travel(NOON, tick=False) as clock:
        assert client.get("/v1/api-keys").status_code == 200
        assert client.get("/v1/api-keys").status_code == 429
        clock.shift(timedelta(seconds=40))
        assert client.get("/v1/api-keys").status_code == 200


@pytest.mark.urls("tests.urls")
@time_machine.travel(NOON, tick=False)
def test_ingest_has_its_own_limit(project, backend):
    project.api_rate_limit_per_minute = 1
    project.ingest_rate_limit_per_minute = 2
    project.save()
    client = api_client(project)

    api_calls = [client.get("/v1/api-keys").status_code for _ in range(2)]
    ingest_calls = [client.post("/v1/test/ingest", {}, format="json").status_code for _ in range(3)]

    assert api_calls == [200, 429]
    assert ingest_calls == [200, 200, 429]


@time_machine.travel(NOON, tick=False)
def test_limits_are_per_key(project):
    project.api_rate_limit_per_minute = 1
    project.save()
    first, second = api_client(project), api_client(project, [Scope.BILLING_READ])

    assert first.get("/v1/api-keys").status_code == 200
    assert second.get("/v1/api-keys").status_code == 200
    assert first.get("/v1/api-keys").status_code == 429


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_an_unreachable_redis_lets_requests_through(project):
    ratelimit._redis.cache_clear()
    project.api_rate_limit_per_minute = 1
    project.save()
    client = api_client(project)

    assert [client.get("/v1/api-keys").status_code for _ in range(2)] == [200, 200]
    ratelimit._redis.cache_clear()
