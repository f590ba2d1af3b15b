"""What the benchmarks share: a throwaway PostgreSQL database of their own, and COPY of events."""

import io
import json
from collections.abc import Iterable
from urllib.parse import urlparse


def _admin_connection(url: str):
    import psycopg

    parsed = urlparse(url)
    return psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True)


def recreate_database(url: str) -> None:
    name = urlparse(url).path.lstrip("/")
    assert name.startswith("billable_bench"), "refusing to drop a database not named billable_bench*"
    with _admin_connection(url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    name = urlparse(url).path.lstrip("/")
    with _admin_connection(url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
