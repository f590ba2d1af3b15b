"""Period-close benchmark (docs/performance.md): run by hand against PostgreSQL.

    .venv/bin/python bench/close.py [--customers 1000] [--events-per-customer 10000]

It creates its own database (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/billable_bench_close; dropped at the end unless --keep) and:

1. sets up one project, a metered plan (49.00 a month in advance plus a graduated usage charge
   on a `sum` meter) and N customers subscribed from the start of last month, and issues their
   opening invoices (the state a real deployment is in when last month ends);
2. loads N × M events spread over last month with COPY, matched as ingestion stores them, and
   the hourly rollups ingestion keeps beside them (built here by one GROUP BY), then VACUUM
   ANALYZE;
3. times one raw SQL `GROUP BY customer, meter` over those events (the floor: reading the usage
   once, with nothing priced or written), three times;
4. times `billing_close` (what `manage.py close_billing_periods` runs) closing every period:
   N invoices with usage and next month's advance fee, finalized and numbered;
5. checks every invoice total against the expected amount computed here from the generator, and
   that the numbers run gap-free.

Targets (issue 5): close ≤ 60 s, and ≤ 3× the raw GROUP BY (the best of the three).
"""

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import time_machine

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from support import copy_events, copy_lines, drop_database, fresh_django  # noqa: E402

TARGET_SECONDS = 60
TARGET_RATIO = 3
BASE_FEE = Decimal("49.00")
# Graduated: the first 10,000 units free, then 0.002 up to 100,000, then 0.001.
TIERS = [("10000", "0", "0"), ("100000", "0.002", "0"), (None, "0.001", "0")]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--events-per-customer", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", help="also write the close / GROUP BY figure to this file (bench/run.py)")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="profile step 4 with cProfile into PATH (slower) and count its queries per subscription",
    )
    return parser.parse_args()


def _value(customer: int, n: int) -> int:
    """Event n of customer c: 1–10, scaled by 1–5 per customer so the customers land in
    different tiers."""
    return (1 + (n + customer) % 10) * (1 + customer % 5)


def _expected_usage_amount(units: int) -> Decimal:
    """The graduated charge, computed independently of invoicing.rating."""
    amount, below = Decimal(0), 0
    for up_to, unit_price, flat_fee in TIERS:
        top = units if up_to is None else min(units, int(up_to))
        if top > below:
            amount += (top - below) * Decimal(unit_price) + Decimal(flat_fee)
        below = units if up_to is None else int(up_to)
    return amount.quantize(Decimal("0.01"))


def _last_month(now: datetime) -> tuple[datetime, datetime]:
    end = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (end - timedelta(days=1)).replace(day=1), end


def main() -> None:
    args = _arguments()
    url = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/billable_bench_close")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(BASE_DIR / "var" / "bench"),
    }
    total_events = args.customers * args.events_per_customer
    fresh_django(url, env)
    from django.db import connection, connections
    from django.utils import timezone

    from accounts.services import project_bootstrap
    from billing_site.ids import new_public_ids
    from catalog.services import customer_create, plan_create, product_create
    from invoicing.billing import billing_close
    from invoicing.models import BillingReason, Invoice, InvoiceStatus
    from meters.services import meter_create
    from subscriptions.services import subscription_create

    now = timezone.now()
    start, end = _last_month(now)
    project, _, _ = project_bootstrap(name="Bench close")
    meter = meter_create(project=project, code="api_calls", name="API calls", aggregation="sum", actor=None)
    product = product_create(project=project, code="api", name="API", actor=None)
    tiers = [{"up_to": top, "unit_price": price, "flat_fee": flat} for top, price, flat in TIERS]
    plan = plan_create(
        project=project, product=product, code="metered", name="Metered", base_fee=BASE_FEE,
        charges=[
            {
                "meter": meter, "pricing_model": "graduated",
                "tiers": tiers,
            }
        ],
        actor=None,
    )  # fmt: skip

    print(f"\n1. {args.customers:,} customers subscribed from {start:%Y-%m-%d}; opening invoices")
    began = time.perf_counter()
    subscriptions = []
    # Subscribed when last month began (a start in the past, created now, would be billed on one
    # catch-up invoice instead of a period close).
    with time_machine.travel(start, tick=False):
        for number in range(args.customers):
            customer = customer_create(
                project=project, external_id=f"c{number}", name=f"Customer {number}", actor=None
            )
            subscriptions.append(
                subscription_create(
                    project=project, customer=customer, plan=plan, starts_at=start, actor=None
                )
            )
        opened = billing_close(as_of=start + timedelta(minutes=1))
    assert not opened.failed, opened.failed
    print(f"   {time.perf_counter() - began:.1f} s")

    print(f"\n2. COPY of {total_events:,} events over [{start:%Y-%m-%d}, {end:%Y-%m-%d}), then rollups")
    began = time.perf_counter()
    step = (end - start) / args.events_per_customer
    received = now.isoformat()
    expected: dict[str, Decimal] = {}

    def chunks():
        for index, subscription in enumerate(subscriptions):
            values = [_value(index, n) for n in range(args.events_per_customer)]
            expected[subscription.public_id] = BASE_FEE + _expected_usage_amount(sum(values))
            ids = new_public_ids("evt", args.events_per_customer)
            yield copy_lines(
                (
                    ids[n], project.pk, f"c{index}", "api_calls", values[n], (start + step * n).isoformat(),
                    {"region": ("eu", "us", "ap")[n % 3]}, f"c{index}-{n}", received,
                    subscription.customer_id, meter.pk, subscription.pk, "", received,
                )
                for n in range(args.events_per_customer)
            )  # fmt: skip

    connection.ensure_connection()
    raw = connection.connection
    copy_events(raw, chunks())
    with raw.cursor() as cursor:
        # The hourly rollups ingestion maintains event by event, built in one statement.
        cursor.execute(
            """
            INSERT INTO meters_usagerollup (project_id, subscription_id, meter_id, hour, event_count,
                                            value_sum, value_min, value_max, last_matched_at)
            SELECT project_id, subscription_id, meter_id, date_trunc('hour', timestamp, 'UTC'), COUNT(*),
                   SUM(value), MIN(value), MAX(value), MAX(matched_at)
            FROM meters_usageevent GROUP BY 1, 2, 3, 4
            """
        )
    raw.commit()
    raw.autocommit = True
    with raw.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE meters_usageevent")
        cursor.execute("VACUUM ANALYZE meters_usagerollup")
    raw.autocommit = False
    print(f"   {time.perf_counter() - began:.1f} s (setup, not measured)")

    print("\n3. raw SQL GROUP BY customer, meter over the same events")
    group_by = []
    for _ in range(3):
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT customer_id, meter_id, COUNT(*), SUM(value) FROM meters_usageevent
                WHERE project_id = %s AND timestamp >= %s AND timestamp < %s
                GROUP BY customer_id, meter_id
                """,
                [project.pk, start, end],
            )
            groups = cursor.fetchall()
        group_by.append(time.perf_counter() - began)
    assert len(groups) == args.customers, len(groups)
    assert sum(row[2] for row in groups) == total_events
    print("   " + ", ".join(f"{seconds:.2f} s" for seconds in group_by))
    connections.close_all()

    print(f"\n4. billing_close: every period that ended {end:%Y-%m-%d}")
    began = time.perf_counter()
    if args.profile:
        run = _profiled(args.profile, lambda: billing_close(as_of=now), args.customers)
    else:
        run = billing_close(as_of=now)
    close_seconds = time.perf_counter() - began
    closed = run.closed
    print(
        f"   {close_seconds:.2f} s: {closed.periods_closed:,} periods closed, "
        f"{closed.finalized:,} finalized, {closed.queued_for_review:,} for review, "
        f"{run.skipped:,} skipped, {len(run.failed):,} failed"
    )

    print("\n5. checks")
    assert not run.failed, list(run.failed.items())[:3]
    invoices = Invoice.objects.filter(project=project, billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    totals = dict(invoices.values_list("subscription__public_id", "total"))
    wrong = {key: (totals.get(key), amount) for key, amount in expected.items() if totals.get(key) != amount}
    assert not wrong, f"{len(wrong)} invoice totals differ, e.g. {list(wrong.items())[:3]}"
    assert invoices.filter(status=InvoiceStatus.OPEN).count() == args.customers
    numbered = Invoice.objects.filter(project=project, number__isnull=False)
    numbers = sorted(int(number.rsplit("-", 1)[1]) for number in numbered.values_list("number", flat=True))
    assert numbers == list(range(1, len(numbers) + 1)), "invoice numbers have gaps"
    print(f"   {len(totals):,} cycle invoices, each total exact; numbers 1–{len(numbers):,} gap-free")

    best = min(group_by)
    ratio = close_seconds / best
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    rows = [
        ("raw GROUP BY (best of 3)", f"{best:.2f} s", "", ""),
        (
            "billing_close",
            f"{close_seconds:.2f} s",
            f"≤ {TARGET_SECONDS} s",
            _verdict(close_seconds, TARGET_SECONDS),
        ),
        ("close / GROUP BY", f"{ratio:.1f}×", f"≤ {TARGET_RATIO}×", _verdict(ratio, TARGET_RATIO)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        f"\n{total_events:,} events, {args.customers:,} customers; "
        f"run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    if args.json:
        figure = [
            f"close / raw GROUP BY, {args.customers:,} customers × {args.events_per_customer:,} events",
            f"{ratio:.1f}× ({close_seconds:.1f} s / {best:.2f} s)",
            f"≤ {TARGET_RATIO}×",
            "met" if ratio <= TARGET_RATIO else f"MISSED by {ratio / TARGET_RATIO:.1f}×",
        ]
        Path(args.json).write_text(json.dumps([figure]))
    if not args.keep:
        connections.close_all()
        drop_database(url)


def _profiled(path: str, close, customers: int):
    """Run the close under cProfile (written to `path`, top functions printed) and count its queries."""
    import cProfile
    import pstats

    from django.db import connection

    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    profiler = cProfile.Profile()
    with connection.execute_wrapper(count):
        run = profiler.runcall(close)
    profiler.dump_stats(path)
    pstats.Stats(path).sort_stats("cumulative").print_stats(40)
    print(f"   {queries:,} queries, {queries / customers:.1f} per subscription (profiled: times inflated)")
    return run


def _verdict(figure: float, target: float) -> str:
    return "met" if figure <= target else "MISSED"


if __name__ == "__main__":
    main()
