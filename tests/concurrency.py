"""Running work in several threads at once, each with its own database connection (for the tests
that prove a guarantee under real concurrency, on PostgreSQL)."""

import threading

from django.db import connection


def all_at_once(work, runs: int) -> list:
    """`work()` in `runs` threads released together; their results, in the order they finished."""
    start = threading.Barrier(runs)
    results: list = []

    def run() -> None:
        try:
            start.wait(timeout=10)
            results.append(work())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == runs
    return results
