"""Usage ingestion benchmark (docs/performance.md): run by hand against PostgreSQL.

    .venv/bin/python bench/ingest.py [--events 1000000] [--singles 20000] [--json FILE]

It creates its own database (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/billable_bench_ingest; dropped at the end unless --keep),
serves the app the way `make run` does (`manage.py serve --no-worker`, its default processes and
threads; REDIS_URL, default redis://127.0.0.1:6379/13, holds the rate-limit counters and the API
key versions as in production) with one more route, a bare Django view (bench/settings.py), and
prints in one run:

1. raw baseline: COPY of the same N events straight into the events table (the ceiling);
2. batch ingest over HTTP, 1,000 events a request, all new keys, against COPY;
3. the same batches replayed (all duplicates);
4. single-event POSTs as fast as 16 clients go, against the bare view served by the same server
   in the same run (requests/s, and CPU per request of the app and of PostgreSQL), then p50/p99
   latency at a paced 300 requests/s (open loop: latency counts from each scheduled time);
5. GET /v1/customers/{id}/usage latency for the customer whose 1,000,000 events (with the
   default --events) are all in the current period.

The load generator runs on the same machine (processes with keep-alive HTTP/1.1 connections), as
the targets assume. CPU seconds used by the app, PostgreSQL and the load generator are printed for
each phase, to show what limits it. `--json FILE` also writes the figures (bench/run.py reads it).
"""

import argparse
import http.client
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

import load  # noqa: E402
from support import (  # noqa: E402
    copy_events,
    copy_lines,
    drop_database,
    fresh_django,
    single_event_bodies,
    usage_project,
)

BATCH = 1000
PACED_RATE = 300  # requests/s
# Issue 14's targets on a 2-core machine (app, database and load generator together).
TARGETS = {
    "batch_vs_copy": 0.45,
    "singles": 600,  # requests/s
    "singles_vs_bare": 0.30,
    "singles_cpu_ms": 1.5,  # app + PostgreSQL CPU a request
    "singles_p99_ms": 50,  # at PACED_RATE
    "usage_p99_ms": 20,
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the batch phases")
    parser.add_argument("--singles", type=int, default=20_000, help="single-event requests at full speed")
    parser.add_argument(
        "--paced-seconds", type=float, default=10, help="length of the paced single-event run"
    )
    parser.add_argument("--usage-requests", type=int, default=300)
    parser.add_argument("--batch-clients", type=int, default=4, help="concurrent batch senders")
    parser.add_argument("--single-clients", type=int, default=16, help="concurrent single-event senders")
    parser.add_argument("--workers", type=int, default=None, help="server processes (default: as make run)")
    parser.add_argument("--threads", type=int, default=None, help="threads a process (default: as make run)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


# --- phases ---------------------------------------------------------------------------------------


def _check_stored(expected: int) -> None:
    from django.db import connections

    from meters.models import UsageEvent

    stored = UsageEvent.objects.count()
    connections.close_all()  # no connection may be open when the next phase forks
    if stored != expected:
        raise SystemExit(f"{stored:,} events stored, expected {expected:,}")


def _batch_phase(args, headers, meter: load.CpuMeter, label: str) -> float:
    """Send every batch once; events a second, checked against what is stored."""
    before = meter.snapshot()
    result = load.run(
        args.port, headers, "POST", "/v1/usage", list(range(len(load.BODIES))), args.batch_clients,
        expect=b'"rejected":0',
    ).check(label)  # fmt: skip
    _check_stored(args.events)
    rate = args.events / result.elapsed
    print(f"   {rate:,.0f} events/s; p50 {result.percentile(0.5):.0f} ms a request")
    print("   " + load.CpuMeter.usage(before, meter.snapshot()).describe())
    return rate


def _singles_phase(args, headers, meter: load.CpuMeter, figures: dict) -> None:
    """The bare view, then as many single events, as fast as the same clients go; then single
    events paced at PACED_RATE."""
    for label, method, path, indexes, expect in (
        ("bare", "GET", "/bench/bare", [0] * args.singles, None),
        ("singles", "POST", "/v1/usage", list(range(args.singles)), b'"accepted":1'),
    ):
        before = meter.snapshot()
        result = load.run(args.port, headers, method, path, indexes, args.single_clients, expect=expect)
        usage = load.CpuMeter.usage(before, meter.snapshot())
        result.check(label)
        figures[label] = result.rate
        figures[f"{label}_cpu_ms"] = (usage.app / args.singles * 1000, usage.database / args.singles * 1000)
        print(
            f"   {label}: {result.rate:,.0f} requests/s; p50 {result.percentile(0.5):.1f} ms, "
            f"p99 {result.percentile(0.99):.1f} ms\n   {usage.describe(args.singles)}"
        )
    count = int(PACED_RATE * args.paced_seconds)
    result = load.run(
        args.port, headers, "POST", "/v1/usage", list(range(args.singles, args.singles + count)),
        args.single_clients, rate=PACED_RATE, expect=b'"accepted":1',
    ).check("paced singles")  # fmt: skip
    figures["paced"] = (result.rate, result.percentile(0.5), result.percentile(0.99))
    print(
        f"   paced at {PACED_RATE}/s: achieved {result.rate:,.0f}/s, p50 {result.percentile(0.5):.1f} ms, "
        f"p99 {result.percentile(0.99):.1f} ms"
    )


def _usage_phase(args, headers, big, expected_total: int, figures: dict) -> None:
    path = f"/v1/customers/{big.public_id}/usage"
    check = http.client.HTTPConnection("127.0.0.1", args.port)
    check.request("GET", path, headers=headers)
    usage = json.loads(check.getresponse().read())
    quantity = usage["subscriptions"][0]["meters"][0]["quantity"]
    assert quantity == str(expected_total), f"usage {quantity} != {expected_total}"
    result = load.run(args.port, headers, "GET", path, [0] * args.usage_requests, 1).check("usage")
    figures["usage_p50"], figures["usage_p99"] = result.percentile(0.5), result.percentile(0.99)
    print(
        f"   quantity {quantity} (exact); "
        f"p50 {figures['usage_p50']:.1f} ms, p99 {figures['usage_p99']:.1f} ms"
    )


# --- the run --------------------------------------------------------------------------------------


def main() -> None:
    args = _arguments()
    url, env = load.environment("billable_bench_ingest")
    fresh_django(url, env)
    from django.db import connection, connections

    setup = usage_project()
    headers = {"Authorization": f"Bearer {setup.secret}", "Content-Type": "application/json"}

    # The batch events: the big customer's, in time order across its current period (as a stream
    # would deliver them), 1,000 a request.
    first = setup.subscription.current_period_start + timedelta(minutes=1)
    step = (setup.now - timedelta(minutes=1) - first) / args.events

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
    figures = {"copy": _copy_baseline(connection, setup, batches)}
    print(f"   {figures['copy']:,.0f} events/s")

    connections.close_all()
    server = load.serve(port=args.port, env=env, workers=args.workers, threads=args.threads)
    meter = load.CpuMeter(server, urlparse(url).path.lstrip("/"), url)
    try:
        load.BODIES[:] = batches
        print(
            f"\n2. batch ingest: {len(batches):,} requests of {BATCH:,} new events, "
            f"{args.batch_clients} clients"
        )
        figures["batch"] = _batch_phase(args, headers, meter, "batch")
        print("\n3. the same batches replayed: all duplicates")
        figures["replay"] = _batch_phase(args, headers, meter, "replay")

        load.BODIES[:] = single_event_bodies(args.singles + int(args.paced_seconds * PACED_RATE))
        print(
            f"\n4. bare view, then single-event POSTs: {args.singles:,} requests each, "
            f"{args.single_clients} clients"
        )
        _singles_phase(args, headers, meter, figures)

        print(f"\n5. GET /v1/customers/{{id}}/usage for the customer with {args.events:,} events this period")
        _usage_phase(args, headers, setup.big, expected_total, figures)
    finally:
        load.stop(server)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    rows = summary(figures, args.events)
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    if not args.keep:
        connections.close_all()
        drop_database(url)


def _copy_baseline(connection, setup, batches) -> float:
    """COPY the same events (matched, as ingestion would store them) into the events table, time
    it, then empty the table again for the HTTP phases."""
    from billing_site.ids import new_public_ids

    project, customer, meter, subscription = setup.project, setup.big, setup.meter, setup.subscription
    received = setup.now.isoformat()
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


def summary(figures: dict, events: int) -> list[list[str]]:
    """Print the figures against the targets, as ratios where the target is one; return the rows."""

    def verdict(value: float, target: float, higher: bool = True) -> str:
        met = value >= target if higher else value <= target
        return "met" if met else f"MISSED by {abs(1 - value / target):.0%}"

    batch, copy, bare, singles = figures["batch"], figures["copy"], figures["bare"], figures["singles"]
    app_ms, database_ms = figures["singles_cpu_ms"]
    paced_rate, _, paced_p99 = figures["paced"]
    usage_p50, usage_p99, replay = figures["usage_p50"], figures["usage_p99"], figures["replay"]
    cpu_ms = app_ms + database_ms
    rows = [
        [
            "batch ingest / raw COPY",
            f"{batch / copy:.0%} ({batch:,.0f} / {copy:,.0f} events/s)",
            f"≥ {TARGETS['batch_vs_copy']:.0%}",
            verdict(batch / copy, TARGETS["batch_vs_copy"]),
        ],
        [
            "replay / batch ingest",
            f"{replay / batch:.0%} ({replay:,.0f} events/s)",
            "≥ 100%",
            verdict(replay / batch, 1),
        ],
        [
            "single events / bare view",
            f"{singles / bare:.0%} ({singles:,.0f} / {bare:,.0f} requests/s)",
            f"≥ {TARGETS['singles_vs_bare']:.0%} and ≥ {TARGETS['singles']}/s",
            verdict(min(singles / bare / TARGETS["singles_vs_bare"], singles / TARGETS["singles"]), 1),
        ],
        [
            "single event CPU (app + PostgreSQL)",
            f"{cpu_ms:.2f} ms ({app_ms:.2f} + {database_ms:.2f})",
            f"≤ {TARGETS['singles_cpu_ms']} ms",
            verdict(cpu_ms, TARGETS["singles_cpu_ms"], higher=False),
        ],
        [
            f"single events p99 at {PACED_RATE}/s",
            f"{paced_p99:.1f} ms (achieved {paced_rate:,.0f}/s)",
            f"≤ {TARGETS['singles_p99_ms']} ms",
            verdict(paced_p99, TARGETS["singles_p99_ms"], higher=False),
        ],
        [
            f"current usage p99, {events:,} events",
            f"{usage_p99:.1f} ms (p50 {usage_p50:.1f})",
            f"≤ {TARGETS['usage_p99_ms']} ms",
            verdict(usage_p99, TARGETS["usage_p99_ms"], higher=False),
        ],
    ]
    print_table(rows)
    return rows


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"\nrun at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
