"""Usage ingestion benchmark (docs/performance.md): run by hand against PostgreSQL.

    .venv/bin/python bench/ingest.py [--events 1000000] [--singles 20000] [--workers 2] [--threads 4]

It creates its own database (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/billable_bench_ingest; dropped at the end unless --keep),
serves the app with gunicorn the way `make run` does (`manage.py serve --no-worker`; REDIS_URL,
default redis://127.0.0.1:6379/13, holds the rate-limit counters as in production), and prints in
one run:

1. raw baseline: COPY of the same N events straight into the events table (the ceiling);
2. batch ingest over HTTP, 1,000 events a request, all new keys;
3. the same batches replayed (all duplicates);
4. single-event POSTs: the most a few concurrent clients get, then p50/p99 latency at a paced
   400 requests/s (half the 800/s target) and at half the measured maximum;
5. GET /v1/customers/{id}/usage latency for the customer whose 1,000,000 events (with the
   default --events) are all in the current period.

The load generator runs on the same machine (processes with keep-alive HTTP/1.1 connections), as
the targets assume. CPU seconds used by the app, PostgreSQL and the load generator are printed for
each phase, to show what limits it.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from support import copy_events, copy_lines, drop_database, fresh_django  # noqa: E402

BATCH = 1000
TARGETS = {
    "batch": 30_000,  # events/s, and at least 25 % of the COPY rate
    "batch_vs_copy": 0.25,
    "singles": 800,  # requests/s
    "singles_p99_ms": 50,  # at half that load
    "usage_p99_ms": 50,
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the batch phases")
    parser.add_argument("--singles", type=int, default=20_000, help="single-event requests at full speed")
    parser.add_argument(
        "--paced-seconds", type=float, default=10, help="length of each paced single-event run"
    )
    parser.add_argument("--usage-requests", type=int, default=300)
    parser.add_argument("--batch-clients", type=int, default=4, help="concurrent batch senders")
    parser.add_argument("--single-clients", type=int, default=16, help="concurrent single-event senders")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


# --- database and server --------------------------------------------------------------------------


def _environment(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(BASE_DIR / "var" / "bench"),
    }


def _start_server(args, env) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve",
            "--no-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise SystemExit("the server did not start")


# --- CPU accounting -------------------------------------------------------------------------------


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cpu_seconds(pids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) so far of each process still running."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two readings by the processes alive at the second (those that started in
    between count whole; those that ended in between are lost, which PostgreSQL's persistent
    connections make rare)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


class CpuMeter:
    """CPU seconds of the app (gunicorn), PostgreSQL (this database's backends) and the load
    generator (this process's finished children) over a phase."""

    def __init__(self, server: subprocess.Popen, database: str) -> None:
        self.server = server
        self.database = database

    def _postgres_pids(self) -> set[int]:
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.database],
            ).fetchall()
        return {pid for (pid,) in rows}

    def snapshot(self) -> tuple[dict, dict, float, float]:
        children = os.times()
        return (
            _cpu_seconds(_descendants(self.server.pid)),
            _cpu_seconds(self._postgres_pids()),
            children.children_user + children.children_system,
            time.monotonic(),
        )

    @staticmethod
    def describe(before, after) -> str:
        app, database = _spent(before[0], after[0]), _spent(before[1], after[1])
        load, wall = after[2] - before[2], after[3] - before[3]
        return (
            f"CPU over {wall:.1f} s: app {app:.1f} s ({app / wall:.0%} of a core), "
            f"PostgreSQL {database:.1f} s ({database / wall:.0%}), "
            f"load generator {load:.1f} s ({load / wall:.0%})"
        )


# --- load generation ------------------------------------------------------------------------------

_BODIES: list[bytes] = []  # set before forking, shared copy-on-write with the client processes


def _client(job: tuple) -> tuple[list[float], dict[int, int], list[bytes]]:
    """One client process: send its share of the bodies on one keep-alive connection, paced to
    `rate` per second when given (latency then counts from the scheduled time, so a slow server
    cannot hide its queue), as fast as possible otherwise."""
    port, headers, method, path, indexes, start_at, rate = job
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, statuses, failures = [], {}, []
    time.sleep(max(0.0, start_at - time.time()))
    origin = time.perf_counter()
    for count, index in enumerate(indexes):
        if rate:
            scheduled = origin + count / rate
            time.sleep(max(0.0, scheduled - time.perf_counter()))
            began = scheduled
        else:
            began = time.perf_counter()
        body = _BODIES[index] if method == "POST" else None
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        latencies.append(time.perf_counter() - began)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status != 200 and len(failures) < 3:
            failures.append(content[:300])
        elif method == "POST" and len(failures) < 3 and b'"rejected":0' not in content:
            failures.append(content[-300:])
    return latencies, statuses, failures


def _run(port, headers, method, path, indexes, clients, rate=None) -> tuple[float, list[float], dict, list]:
    start_at = time.time() + 0.5
    shares = [indexes[k::clients] for k in range(clients)]
    jobs = [
        (port, headers, method, path, share, start_at, rate / clients if rate else None) for share in shares
    ]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        results = pool.map(_client, jobs)
    elapsed = time.time() - start_at
    latencies = [latency for result in results for latency in result[0]]
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result[1].items():
            statuses[status] = statuses.get(status, 0) + count
    failures = [failure for result in results for failure in result[2]]
    return elapsed, latencies, statuses, failures


def _check_stored(expected: int) -> None:
    from django.db import connections

    from meters.models import UsageEvent

    stored = UsageEvent.objects.count()
    connections.close_all()  # no connection may be open when the next phase forks
    if stored != expected:
        raise SystemExit(f"{stored:,} events stored, expected {expected:,}")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def _check(statuses: dict, failures: list, what: str) -> None:
    if set(statuses) != {200} or failures:
        raise SystemExit(f"{what}: unexpected answers {statuses}: {failures[:2]}")


# --- the run --------------------------------------------------------------------------------------


def main() -> None:
    args = _arguments()
    url = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/billable_bench_ingest")
    database = urlparse(url).path.lstrip("/")
    env = _environment(url)
    fresh_django(url, env)
    from django.db import connection, connections
    from django.utils import timezone

    from accounts.models import Project, Scope
    from accounts.services import api_key_create, project_bootstrap
    from catalog.services import customer_create, plan_create, product_create
    from meters.services import meter_create
    from subscriptions.services import subscription_create

    project, _, _ = project_bootstrap(name="Bench")
    Project.objects.filter(pk=project.pk).update(
        ingest_rate_limit_per_minute=1_000_000_000, api_rate_limit_per_minute=1_000_000_000
    )
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
    # Anniversary billing from 29 days ago: the current period holds 29 days of events.
    big = customer_create(project=project, external_id="bench-big", name="Big", actor=None)
    subscription = subscription_create(
        project=project, customer=big, plan=plan, starts_at=now - timedelta(days=29),
        billing_anchor="anniversary", actor=None,
    )  # fmt: skip
    small = [customer_create(project=project, external_id=f"bench-{n}", actor=None) for n in range(100)]
    for customer in small:
        subscription_create(
            project=project, customer=customer, plan=plan, starts_at=now - timedelta(days=1), actor=None
        )
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    # The batch events: the big customer's, in time order across its current period (as a stream
    # would deliver them), 1,000 a request.
    first = subscription.current_period_start + timedelta(minutes=1)
    step = (now - timedelta(minutes=1) - first) / args.events

    def event(n: int) -> dict:
        return {
            "customer": "bench-big",
            "meter": "api_calls",
            "value": 1 + n % 10,
            "timestamp": (first + step * n).isoformat(),
            "properties": {"region": ("eu", "us", "ap")[n % 3], "project": f"p{n % 7}"},
            "idempotency_key": f"batch-{n}",
        }

    expected_total = sum(1 + n % 10 for n in range(args.events))
    batches = [
        json.dumps([event(n) for n in range(start, min(start + BATCH, args.events))]).encode()
        for start in range(0, args.events, BATCH)
    ]

    print(f"\n1. COPY of {args.events:,} events into the events table")
    copy_rate = _copy_baseline(connection, project, big, meter, subscription, batches, now)
    print(f"   {copy_rate:,.0f} events/s")

    connections.close_all()
    server = _start_server(args, env)
    meter_cpu = CpuMeter(server, database)
    figures = {"copy": copy_rate}
    try:
        _BODIES[:] = batches
        print(
            f"\n2. batch ingest: {len(batches):,} requests of {BATCH:,} new events, "
            f"{args.batch_clients} clients"
        )
        figures["batch"] = _batch_phase(args, headers, meter_cpu, "batch")
        print("\n3. the same batches replayed: all duplicates")
        figures["replay"] = _batch_phase(args, headers, meter_cpu, "replay")

        _BODIES[:] = [
            json.dumps(
                {
                    "customer": f"bench-{n % 100}",
                    "meter": "api_calls",
                    "value": 1,
                    "idempotency_key": f"single-{n}",
                }
            ).encode()
            for n in range(args.singles + 2 * int(args.paced_seconds * 2000))
        ]
        print(f"\n4. single-event POSTs: {args.singles:,} requests, {args.single_clients} clients")
        before = meter_cpu.snapshot()
        elapsed, latencies, statuses, failures = _run(
            args.port, headers, "POST", "/v1/usage", list(range(args.singles)), args.single_clients
        )
        _check(statuses, failures, "singles")
        figures["singles"] = args.singles / elapsed
        print(
            f"   {figures['singles']:,.0f} requests/s; p50 {_percentile(latencies, 0.5):.1f} ms, "
            f"p99 {_percentile(latencies, 0.99):.1f} ms"
        )
        print("   " + CpuMeter.describe(before, meter_cpu.snapshot()))
        offset = args.singles
        for label, rate in (("400/s", 400), ("half the maximum", figures["singles"] / 2)):
            count = int(rate * args.paced_seconds)
            elapsed, latencies, statuses, failures = _run(
                args.port, headers, "POST", "/v1/usage", list(range(offset, offset + count)),
                args.single_clients, rate=rate,
            )  # fmt: skip
            offset += count
            _check(statuses, failures, f"paced singles at {label}")
            p99 = _percentile(latencies, 0.99)
            figures.setdefault("paced", []).append((label, rate, count / elapsed, p99))
            print(
                f"   paced at {rate:,.0f}/s ({label}): achieved {count / elapsed:,.0f}/s, "
                f"p50 {_percentile(latencies, 0.5):.1f} ms, p99 {p99:.1f} ms"
            )

        print(f"\n5. GET /v1/customers/{{id}}/usage for the customer with {args.events:,} events this period")
        path = f"/v1/customers/{big.public_id}/usage"
        check = http.client.HTTPConnection("127.0.0.1", args.port)
        check.request("GET", path, headers=headers)
        usage = json.loads(check.getresponse().read())
        quantity = usage["subscriptions"][0]["meters"][0]["quantity"]
        assert quantity == str(expected_total), f"usage {quantity} != {expected_total}"
        elapsed, latencies, statuses, failures = _run(
            args.port, headers, "GET", path, list(range(args.usage_requests)), 1
        )
        _check(statuses, failures, "usage")
        figures["usage_p50"], figures["usage_p99"] = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        print(
            f"   quantity {quantity} (exact); "
            f"p50 {figures['usage_p50']:.1f} ms, p99 {figures['usage_p99']:.1f} ms"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    _summary(figures, args.events)
    if not args.keep:
        connections.close_all()
        drop_database(url)


def _batch_phase(args, headers, meter_cpu: "CpuMeter", label: str) -> float:
    """Send every batch once; events a second, checked against what is stored."""
    before = meter_cpu.snapshot()
    elapsed, latencies, statuses, failures = _run(
        args.port, headers, "POST", "/v1/usage", list(range(len(_BODIES))), args.batch_clients
    )
    _check(statuses, failures, label)
    _check_stored(args.events)
    rate = args.events / elapsed
    print(f"   {rate:,.0f} events/s; p50 {_percentile(latencies, 0.5):.0f} ms a request")
    print("   " + CpuMeter.describe(before, meter_cpu.snapshot()))
    return rate


def _copy_baseline(connection, project, customer, meter, subscription, batches, now) -> float:
    """COPY the same events (matched, as ingestion would store them) into the events table, time
    it, then empty the table again for the HTTP phases."""
    from billing_site.ids import new_public_ids

    received = now.isoformat()
    rows = []
    for body in batches:
        events = json.loads(body)
        for public_id, event in zip(new_public_ids("evt", len(events)), events, strict=True):
            rows.append(
                (
                    public_id, project.pk, event["customer"], event["meter"], event["value"],
                    event["timestamp"], event["properties"], event["idempotency_key"], received,
                    customer.pk, meter.pk, subscription.pk, "", received,
                )
            )  # fmt: skip
    data = copy_lines(rows)
    connection.ensure_connection()
    raw = connection.connection
    started = time.perf_counter()
    copy_events(raw, [data])
    raw.commit()
    elapsed = time.perf_counter() - started
    with raw.cursor() as cursor:
        cursor.execute("TRUNCATE meters_usageevent")
    raw.commit()
    return len(rows) / elapsed


def _summary(figures: dict, events: int) -> None:
    def verdict(ok: bool, detail: str = "") -> str:
        return "met" if ok else f"MISSED{detail}"

    batch, copy = figures["batch"], figures["copy"]
    share = batch / copy
    rows = [
        ("raw COPY (ceiling)", f"{copy:,.0f} events/s", "", ""),
        (
            "batch ingest, new keys",
            f"{batch:,.0f} events/s ({share:.0%} of COPY)",
            f"≥ {TARGETS['batch']:,}/s and ≥ 25 % of COPY",
            verdict(
                batch >= TARGETS["batch"] and share >= TARGETS["batch_vs_copy"],
                f" by {max(0, 1 - batch / TARGETS['batch']):.0%}" if batch < TARGETS["batch"] else "",
            ),
        ),
        (
            "batch replay, all duplicates",
            f"{figures['replay']:,.0f} events/s",
            "≥ new-key rate",
            verdict(figures["replay"] >= batch, f" by {1 - figures['replay'] / batch:.0%}"),
        ),
        (
            "single-event POSTs",
            f"{figures['singles']:,.0f} requests/s",
            f"≥ {TARGETS['singles']}/s",
            verdict(
                figures["singles"] >= TARGETS["singles"],
                f" by {1 - figures['singles'] / TARGETS['singles']:.0%}",
            ),
        ),
    ]
    for label, rate, achieved, p99 in figures["paced"]:
        rows.append(
            (
                f"single-event p99 at {rate:,.0f}/s ({label})",
                f"{p99:.1f} ms (achieved {achieved:,.0f}/s)",
                f"≤ {TARGETS['singles_p99_ms']} ms",
                verdict(p99 <= TARGETS["singles_p99_ms"]),
            )
        )
    rows.append(
        (
            f"current usage, {events:,}-event customer",
            f"p50 {figures['usage_p50']:.1f} ms, p99 {figures['usage_p99']:.1f} ms",
            f"p99 ≤ {TARGETS['usage_p99_ms']} ms",
            verdict(figures["usage_p99"] <= TARGETS["usage_p99_ms"]),
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"\nrun at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
