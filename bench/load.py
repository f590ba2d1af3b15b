"""What the HTTP benchmarks share: serving the app the way `make run` does, a load generator on
the same machine (forked processes, one keep-alive HTTP/1.1 connection each, bodies prepared
beforehand) and CPU accounting per phase for the app, PostgreSQL and the load generator.
"""

import http.client
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Set before forking, shared copy-on-write with the client processes.
BODIES: list[bytes] = []


def environment(database: str) -> tuple[str, dict[str, str]]:
    """The benchmark database's URL (BENCH_DATABASE_URL, else this name on the local PostgreSQL)
    and the environment the app is served with: Redis db 13 (BENCH_REDIS_URL) for the rate-limit
    counters and API-key versions, warnings only, a scratch DATA_DIR."""
    url = os.environ.get("BENCH_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/{database}")
    return url, {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(BASE_DIR / "var" / "bench"),
    }


def serve(*, port: int, env: dict[str, str], workers: int | None = None, threads: int | None = None,
          server: str = "gunicorn") -> subprocess.Popen:  # fmt: skip
    """Serve the app with the benchmark's settings (bench/settings.py adds the bare view) until
    it answers: `manage.py serve --no-worker` as `make run` runs it (gunicorn; workers and
    threads default as there), or granian's WSGI server with the same processes and threads
    (for bench/servers.py; `pip install granian` first, it is not a dependency of the app)."""
    if server == "gunicorn":
        command = [sys.executable, "manage.py", "serve", "--no-worker", "--host", "127.0.0.1"]
        command += ["--port", str(port)]
        for flag, value in (("--workers", workers), ("--threads", threads)):
            if value is not None:
                command += [flag, str(value)]
    else:
        from django.conf import settings

        command = [
            sys.executable, "-m", "granian", "--interface", "wsgi", "billing_site.wsgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers or settings.WEB_CONCURRENCY),
            "--blocking-threads", str(threads or settings.WEB_THREADS), "--access-log",
        ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=BASE_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "bench.settings"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/bench/bare")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit("the server did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


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


@dataclass
class Usage:
    wall: float
    app: float  # CPU seconds
    database: float
    load: float

    def describe(self, requests: int | None = None) -> str:
        text = (
            f"CPU over {self.wall:.1f} s: app {self.app:.1f} s ({self.app / self.wall:.0%} of a core), "
            f"PostgreSQL {self.database:.1f} s ({self.database / self.wall:.0%}), "
            f"load generator {self.load:.1f} s ({self.load / self.wall:.0%})"
        )
        if requests:
            text += (
                f"; per request: app {self.app / requests * 1000:.2f} ms, "
                f"PostgreSQL {self.database / requests * 1000:.2f} ms"
            )
        return text


class CpuMeter:
    """CPU seconds of the app (the server's processes), PostgreSQL (this database's backends) and
    the load generator (this process's finished children) over a phase."""

    def __init__(self, server: subprocess.Popen, database: str, database_url: str) -> None:
        self.server = server
        self.database = database
        self.database_url = database_url

    def _postgres_pids(self) -> set[int]:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as connection:
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
    def usage(before, after) -> Usage:
        return Usage(
            wall=after[3] - before[3],
            app=_spent(before[0], after[0]),
            database=_spent(before[1], after[1]),
            load=after[2] - before[2],
        )


# --- load generation ------------------------------------------------------------------------------


def _client(job: tuple) -> tuple[list[float], dict[int, int], list[bytes]]:
    """One client process: send its share of the bodies on one keep-alive connection, paced to
    `rate` per second when given (latency then counts from the scheduled time, so a slow server
    cannot hide its queue), as fast as possible otherwise."""
    port, headers, method, path, indexes, start_at, rate, expect = job
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
        body = BODIES[index] if method == "POST" else None
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        latencies.append(time.perf_counter() - began)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status != 200 and len(failures) < 3:
            failures.append(content[:300])
        elif expect is not None and len(failures) < 3 and expect not in content:
            failures.append(content[-300:])
    return latencies, statuses, failures


@dataclass
class Run:
    elapsed: float
    latencies: list[float]
    statuses: dict[int, int]
    failures: list[bytes]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def percentile(self, fraction: float) -> float:
        """Latency at this fraction, in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    def check(self, what: str) -> "Run":
        if set(self.statuses) != {200} or self.failures:
            raise SystemExit(f"{what}: unexpected answers {self.statuses}: {self.failures[:2]}")
        return self


def run(
    port: int,
    headers: dict,
    method: str,
    path: str,
    indexes: list[int],
    clients: int,
    rate: float | None = None,
    expect: bytes | None = None,
) -> Run:
    """Send one request per index (the body BODIES[index] for a POST) from `clients` processes,
    as fast as they go or paced to `rate` per second in all; `expect` must be in every answer."""
    start_at = time.time() + 0.5
    jobs = [
        (port, headers, method, path, indexes[k::clients], start_at, rate / clients if rate else None, expect)
        for k in range(clients)
    ]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        results = pool.map(_client, jobs)
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result[1].items():
            statuses[status] = statuses.get(status, 0) + count
    return Run(
        elapsed=time.time() - start_at,
        latencies=[latency for result in results for latency in result[0]],
        statuses=statuses,
        failures=[failure for result in results for failure in result[2]],
    )
