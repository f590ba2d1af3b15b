"""What the benchmarks share: a throwaway database of their own (PostgreSQL, or a SQLite file for
the benchmarks that support it), and COPY of events."""

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent


def _admin_connection(url: str):
    import psycopg

    parsed = urlparse(url)
    return psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True)


def _sqlite_files(url: str) -> list[Path]:
    """A SQLite database's file and its WAL companions; none for another database."""
    if not url.startswith("sqlite"):
        return []
    import dj_database_url

    name = Path(dj_database_url.parse(url)["NAME"])
    return [name, name.with_name(name.name + "-wal"), name.with_name(name.name + "-shm")]


def recreate_database(url: str) -> None:
    if files := _sqlite_files(url):
        assert files[0].name.startswith("billable_bench"), "refusing to remove a file not billable_bench*"
        for path in files:
            path.unlink(missing_ok=True)
        return
    name = urlparse(url).path.lstrip("/")
    assert name.startswith("billable_bench"), "refusing to drop a database not named billable_bench*"
    with _admin_connection(url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    if files := _sqlite_files(url):
        for path in files:
            path.unlink(missing_ok=True)
        return
    name = urlparse(url).path.lstrip("/")
    with _admin_connection(url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_django(url: str, env: dict[str, str]) -> None:
    """Print the machine's state, recreate the benchmark's database, migrate it and set Django up
    in this process against it (`env` becomes this process's environment too)."""
    os.environ.update(env)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    recreate_database(url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=BASE_DIR, env=env, check=True
    )
    os.environ["DJANGO_SETTINGS_MODULE"] = "billing_site.settings"
    import django

    django.setup()


def copy_lines(rows: Iterable[tuple]) -> str:
    """Events as COPY text: each row holds the values of meters.storage.EVENT_COLUMNS in order,
    `properties` as a dict."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(json.dumps(value) if isinstance(value, dict) else str(value) for value in row))
        buffer.write("\n")
    return buffer.getvalue()


def copy_events(raw_connection, chunks: Iterable[str]) -> None:
    """COPY chunks of copy_lines() text into the events table, as matched events are stored; the
    caller commits."""
    from meters.storage import EVENT_COLUMNS

    with (
        raw_connection.cursor() as cursor,
        cursor.copy(f"COPY meters_usageevent ({EVENT_COLUMNS}) FROM STDIN") as copy,
    ):
        for chunk in chunks:
            copy.write(chunk)


@dataclass
class UsageProject:
    project: object
    secret: str  # an API key's secret (usage write, billing read)
    meter: object  # api_calls, a plain sum meter
    big: object  # the customer whose anniversary period started 29 days ago
    subscription: object  # big's
    now: datetime


def usage_project() -> UsageProject:
    """A project for the HTTP benchmarks (rate limits lifted): a metered plan, one customer whose
    anniversary period started 29 days ago (its current period holds 29 days of events) and 100
    small customers, bench-0 … bench-99, subscribed since yesterday."""
    from django.utils import timezone

    from accounts.models import Scope
    from accounts.services import api_key_create, project_bootstrap
    from catalog.services import customer_create, plan_create, product_create
    from meters.services import meter_create
    from subscriptions.services import subscription_create

    project, _, _ = project_bootstrap(name="Bench")
    project.ingest_rate_limit_per_minute = project.api_rate_limit_per_minute = 1_000_000_000
    project.save(update_fields=["ingest_rate_limit_per_minute", "api_rate_limit_per_minute"])
    _, secret = api_key_create(
        project=project, name="bench", scopes=[Scope.USAGE_WRITE, Scope.BILLING_READ], actor=None
    )
    meter = meter_create(project=project, code="api_calls", name="API calls", actor=None)
    product = product_create(project=project, code="api", name="API", actor=None)
    plan = plan_create(
        project=project, product=product, code="metered", name="Metered",
        charges=[{"meter": meter, "unit_price": "0.001"}], actor=None,
    )  # fmt: skip
    now = timezone.now()
    big = customer_create(project=project, external_id="bench-big", name="Big", actor=None)
    subscription = subscription_create(
        project=project, customer=big, plan=plan, starts_at=now - timedelta(days=29),
        billing_anchor="anniversary", actor=None,
    )  # fmt: skip
    for n in range(100):
        customer = customer_create(project=project, external_id=f"bench-{n}", actor=None)
        subscription_create(
            project=project, customer=customer, plan=plan, starts_at=now - timedelta(days=1), actor=None
        )
    return UsageProject(project, secret, meter, big, subscription, now)


def single_event_bodies(count: int) -> list[bytes]:
    """`count` one-event POST /v1/usage bodies, new keys, spread over the 100 small customers."""
    return [
        json.dumps(
            {"customer": f"bench-{n % 100}", "meter": "api_calls", "value": 1, "idempotency_key": key}
        ).encode()
        for n, key in ((n, f"single-{n}") for n in range(count))
    ]
