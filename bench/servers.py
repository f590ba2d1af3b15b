"""Web-server benchmark (docs/performance.md): which server `manage.py serve` should run, measured.

    .venv/bin/python bench/servers.py [--requests 6000] [--clients 8]

It creates its own PostgreSQL database (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/billable_bench_servers; dropped at the end) with the usage
benchmark's project, then serves the app with each server in turn — gunicorn's threaded worker
(`billing_site.server.Worker`) and granian's WSGI interface, each with the same processes and
threads — and sends the same requests to each, as fast as `--clients` keep-alive clients go:

- the bare view (`/bench/bare`: Django with nothing to do, the yardstick),
- `GET /healthz` (no key, one `SELECT 1`),
- `GET /v1/meters?limit=1` (API key, rate limit, one list query),
- `POST /v1/usage` with one event (new keys).

It prints requests/s, p50/p99 and the CPU per request of the app and of PostgreSQL for each.
"""

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

import load  # noqa: E402
from support import drop_database, fresh_django, single_event_bodies, usage_project  # noqa: E402


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000, help="requests per route and server")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: as make run)")
    parser.add_argument("--threads", type=int, default=None, help="threads a process (default: as make run)")
    parser.add_argument("--servers", default="gunicorn,granian")
    parser.add_argument("--port", type=int, default=8766)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    url, env = load.environment("billable_bench_servers")
    fresh_django(url, env)
    from django.db import connections

    setup = usage_project()
    connections.close_all()
    headers = {"Authorization": f"Bearer {setup.secret}", "Content-Type": "application/json"}
    routes = [
        ("bare view", "GET", "/bench/bare", None),
        ("GET /healthz", "GET", "/healthz", None),
        ("GET /v1/meters?limit=1", "GET", "/v1/meters?limit=1", None),
        ("POST /v1/usage, 1 event", "POST", "/v1/usage", b'"accepted":1'),
    ]
    servers = args.servers.split(",")
    load.BODIES[:] = single_event_bodies(args.requests * (len(servers) + 1))
    offset = 0
    rows = []
    for server in servers:
        process = load.serve(
            port=args.port, env=env, workers=args.workers, threads=args.threads, server=server
        )
        meter = load.CpuMeter(process, urlparse(url).path.lstrip("/"), url)
        try:
            load.run(args.port, headers, "GET", "/v1/meters?limit=1", list(range(400)), args.clients)  # warm
            for label, method, path, expect in routes:
                indexes = [0] * args.requests
                if method == "POST":  # new idempotency keys each time
                    indexes, offset = list(range(offset, offset + args.requests)), offset + args.requests
                before = meter.snapshot()
                result = load.run(args.port, headers, method, path, indexes, args.clients, expect=expect)
                usage = load.CpuMeter.usage(before, meter.snapshot())
                result.check(f"{server} {label}")
                rows.append((server, label, result, usage))
                print(
                    f"{server:9} {label:26} {result.rate:7,.0f} requests/s"
                    f"  p50 {result.percentile(0.5):6.1f} ms"
                    f"  p99 {result.percentile(0.99):6.1f} ms  app {usage.app / args.requests * 1000:.2f} ms"
                    f"  PostgreSQL {usage.database / args.requests * 1000:.2f} ms a request",
                    flush=True,
                )
        finally:
            load.stop(process)
    bare = {server: result.rate for server, label, result, _ in rows if label == "bare view"}
    print("\nas a share of the same server's bare view:")
    for server, label, result, _ in rows:
        print(f"  {server:9} {label:26} {result.rate / bare[server]:.0%}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    connections.close_all()
    drop_database(url)


if __name__ == "__main__":
    main()
