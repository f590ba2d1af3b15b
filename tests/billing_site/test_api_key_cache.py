"""The per-process cache of API keys (billing_site.api.authentication): a change to a key or its
project is seen by the very next request in every process, with and without Redis."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.test import override_settings
from django.urls.resolvers import URLResolver

from accounts.models import ApiKey
from accounts.services import api_key_revoke, api_key_roll, project_update
from billing_site import ratelimit
from billing_site.api import authentication
from tests.accounts.factories import make_api_key
from tests.conftest import api_client, require, shared_database_url

BASE_DIR = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_API_KEY_CACHE_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture(params=["database", "redis"])
def backend(request) -> str:
    """REDIS_URL for this test and the servers it starts ("" for the database)."""
    if request.param == "database":
        with override_settings(REDIS_URL=""):
            yield ""
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
        reachable = True
    except redis.RedisError:
        reachable = False
    require(reachable, f"Redis at {REDIS_URL} (start redis-server, or set TEST_API_KEY_CACHE_REDIS_URL)")
    ratelimit._redis.cache_clear()
    with override_settings(REDIS_URL=REDIS_URL):
        yield REDIS_URL
    ratelimit._redis.cache_clear()
    for key in client.scan_iter("billable:*"):
        client.delete(key)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _serving(redis_url: str):
    """A web server of one worker process (so one cache), on the test database."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": shared_database_url(), "REDIS_URL": redis_url}
    command = [sys.executable, "manage.py", "serve", "--no-worker", "--workers", "1", "--port", str(port)]
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [*command, "--host", "127.0.0.1"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _get(port, "/healthz", "")[0] != 200:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(port: int, path: str, secret: str) -> tuple[int, dict, dict]:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", path, headers={"Authorization": f"Bearer {secret}"} if secret else {})
        response = connection.getresponse()
        body = response.read()
    except OSError:
        return 0, {}, {}
    return response.status, dict(response.getheaders()), json.loads(body) if body else {}


@pytest.mark.django_db(transaction=True)
def test_a_revoked_key_is_refused_by_the_next_request_in_every_process(backend, project):
    api_key, secret = make_api_key(project)
    with _serving(backend) as first, _serving(backend) as second:
        # Twice each: a key's first request loads it, the second caches it under its version.
        for port in (first, second, first, second, first, second):
            assert _get(port, "/v1/api-keys?limit=1", secret)[0] == 200

        api_key_revoke(api_key=api_key, actor=None)

        for port in (first, second):
            status, _, body = _get(port, "/v1/api-keys?limit=1", secret)
            assert (status, body["error"]["code"]) == (401, "api_key_revoked")


@pytest.mark.django_db(transaction=True)
def test_a_project_change_is_seen_by_the_next_request_in_every_process(backend, project):
    _, secret = make_api_key(project)
    rolled, rolled_secret = make_api_key(project)
    with _serving(backend) as first, _serving(backend) as second:
        for port in (first, second, first, second):
            assert _get(port, "/v1/api-keys?limit=1", secret)[0] == 200
            assert _get(port, "/v1/api-keys?limit=1", rolled_secret)[0] == 200

        project_update(project=project, changes={"api_rate_limit_per_minute": 7}, actor=None)
        api_key_roll(api_key=rolled, actor=None)  # expires now

        for port in (first, second):
            status, headers, _ = _get(port, "/v1/api-keys?limit=1", secret)
            assert (status, headers["X-RateLimit-Limit"]) == (200, "7")
            status, _, body = _get(port, "/v1/api-keys?limit=1", rolled_secret)
            assert (status, body["error"]["code"]) == (401, "api_key_expired")


def test_a_cached_key_is_used_without_a_query(project, django_assert_num_queries):
    client = api_client(project)
    client.get("/v1/api-keys?limit=1")
    client.get("/v1/api-keys?limit=1")  # cached under the version it read

    # The rate-limit upsert (which reads the version) and the list itself: no key lookup.
    with django_assert_num_queries(2):
        assert client.get("/v1/api-keys?limit=1").status_code == 200


def test_revoking_a_key_in_this_process_refuses_its_next_request(project):
    api_key, secret = make_api_key(project)
    client = api_client(project)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert [client.get("/v1/api-keys").status_code for _ in range(3)] == [200, 200, 200]

    response = client.delete(f"/v1/api-keys/{api_key.public_id}")  # the key revokes itself

    assert response.status_code == 200
    response = client.get("/v1/api-keys")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "api_key_revoked")
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None


def test_a_deleted_key_is_invalid_at_once(project):
    api_key, secret = make_api_key(project)
    client = api_client(project)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert [client.get("/v1/api-keys").status_code for _ in range(2)] == [200, 200]

    api_key.delete()

    response = client.get("/v1/api-keys")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_api_key")
    assert authentication._cache.get(authentication.hash_secret(secret)) is None


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_an_unreachable_redis_caches_nothing(project, django_assert_num_queries):
    ratelimit._redis.cache_clear()
    _, secret = make_api_key(project)
    client = api_client(project)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    try:
        client.get("/v1/api-keys?limit=1")  # notes the key as used (once a minute)
        # Every request looks its key up (and the list): the version is unknown.
        for _ in range(2):
            with django_assert_num_queries(2):
                assert client.get("/v1/api-keys?limit=1").status_code == 200
        assert authentication._cache.get(authentication.hash_secret(secret)) is None
    finally:
        ratelimit._redis.cache_clear()


def test_an_api_request_resolves_its_url_once(project, monkeypatch):
    client = api_client(project)
    resolve = URLResolver.resolve
    roots = []

    def counting(self, path):
        if self.pattern.regex.pattern == "^/":
            roots.append(path)
        return resolve(self, path)

    monkeypatch.setattr(URLResolver, "resolve", counting)

    response = client.post(
        "/v1/api-keys", {"name": "ci", "scopes": ["usage:write"]}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )

    assert response.status_code == 201
    assert roots == ["/v1/api-keys"]
