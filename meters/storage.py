"""The statements that write usage events and their hourly rollups, per database.

PostgreSQL inserts a whole batch and its rollups in one statement: the rows travel as one JSON
array, unpacked in SQL as jsonb; `ON CONFLICT (project_id, idempotency_key) DO NOTHING` skips keys
already stored (also those a concurrent request is inserting: PostgreSQL waits for it and then skips), and
`RETURNING` says which rows went in. The rollup upsert reads those returned rows in the same
statement. SQLite (3.35+) has no data-modifying CTEs: one multi-row INSERT … RETURNING, then the
rollup upsert from the returned ids, in the same transaction (SQLite has one writer at a time).

Rows are inserted in idempotency-key order and rollups in key order, so two requests that share
keys or hours always lock them in the same order and cannot deadlock.

A row not inserted repeats a stored event: the PostgreSQL statement also returns those (from its
snapshot); any not visible there (committed by a concurrent request during the statement), and on
SQLite all of them, are read with one more query, only when there are duplicates.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson
import psycopg
from django.db import connection

EVENT_TABLE = "meters_usageevent"
ROLLUP_TABLE = "meters_usagerollup"


@dataclass(slots=True)
class EventRow:
    public_id: str
    customer_external_id: str
    meter_code: str
    value: Decimal
    timestamp: datetime
    properties: str  # serialized JSON
    idempotency_key: str | None
    customer_id: int | None
    meter_id: int | None
    subscription_id: int | None
    unmatched_reason: str


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def fetch_prepared(sql: str, params: list) -> list[tuple]:
    """Run a statement of this app as a prepared statement on PostgreSQL (planned once per
    connection, not at every request: for one event, planning the insert cost more than running
    it), in the current transaction; other databases run it as usual.

    Django's cursors bind parameters client-side and never prepare, so this uses psycopg directly;
    psycopg prepares only on connections opened with a prepare_threshold (settings.DATABASES sets
    one unless DB_PREPARED_STATEMENTS=false, as behind a PgBouncer older than 1.21 in transaction
    mode). Each distinct text is one statement: psycopg keeps the 100 most recent per connection.
    """
    if not is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall()


_ROLLUP_UPSERT = """
    ON CONFLICT (subscription_id, meter_id, hour) DO UPDATE SET
        event_count = meters_usagerollup.event_count + excluded.event_count,
        value_sum = meters_usagerollup.value_sum + excluded.value_sum,
        value_min = CASE WHEN excluded.value_min < meters_usagerollup.value_min
                         THEN excluded.value_min ELSE meters_usagerollup.value_min END,
        value_max = CASE WHEN excluded.value_max > meters_usagerollup.value_max
                         THEN excluded.value_max ELSE meters_usagerollup.value_max END,
        last_matched_at = excluded.last_matched_at
"""

EVENT_COLUMNS = (
    "public_id, project_id, customer_external_id, meter_code, value, timestamp, properties, "
    "idempotency_key, received_at, customer_id, meter_id, subscription_id, unmatched_reason, matched_at"
)

_PG_INSERT = f"""
WITH input AS MATERIALIZED (
    -- ids are drawn here, in request order, so that they follow the request; the insert below
    -- then goes in key order (the locking order). jsonb, not json: the array is parsed once,
    -- where each ->> on a json element parses its text again (measured: 15 µs of PostgreSQL CPU
    -- an event of the 36 the whole statement took; 21 with jsonb).
    SELECT nextval((SELECT pg_get_serial_sequence('{EVENT_TABLE}', 'id')::regclass)) AS id,
           r ->> 0 AS public_id, r ->> 1 AS customer_external_id, r ->> 2 AS meter_code,
           (r ->> 3)::numeric AS value, (r ->> 4)::timestamptz AS ts, r ->> 5 AS idempotency_key,
           (r ->> 6)::bigint AS customer_id, (r ->> 7)::bigint AS meter_id,
           (r ->> 8)::bigint AS subscription_id, r ->> 9 AS unmatched_reason, r -> 10 AS properties
    FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS elements(r, position)
    ORDER BY position
),
inserted AS (
    INSERT INTO {EVENT_TABLE} (id, {EVENT_COLUMNS})
    SELECT id, public_id, %s, customer_external_id, meter_code, value, ts, properties, idempotency_key,
           %s, customer_id, meter_id, subscription_id, unmatched_reason,
           CASE WHEN subscription_id IS NULL THEN NULL ELSE %s::timestamptz END
    FROM input ORDER BY idempotency_key
    ON CONFLICT (project_id, idempotency_key) DO NOTHING
    RETURNING public_id, subscription_id, meter_id, timestamp, value, matched_at
),
rolled AS (
    INSERT INTO {ROLLUP_TABLE}
        (project_id, subscription_id, meter_id, hour, event_count, value_sum, value_min, value_max,
         last_matched_at)
    SELECT %s, subscription_id, meter_id, date_trunc('hour', timestamp, 'UTC'),
           count(*), sum(value), min(value), max(value), max(matched_at)
    FROM inserted WHERE subscription_id IS NOT NULL
    GROUP BY 2, 3, 4 ORDER BY 2, 3, 4
    {_ROLLUP_UPSERT}
)
SELECT public_id, NULL FROM inserted
UNION ALL
-- The stored events the others repeat. This reads the statement's snapshot: a row committed by a
-- concurrent request after it began (the insert waited for it) is not visible here and is read
-- afterwards.
SELECT stored.public_id, stored.idempotency_key
FROM input
JOIN {EVENT_TABLE} stored ON stored.project_id = %s AND stored.idempotency_key = input.idempotency_key
WHERE NOT EXISTS (SELECT 1 FROM inserted WHERE inserted.public_id = input.public_id)
"""  # noqa: S608 - module constants only; every value is a parameter

_SQLITE_ROLLUP_ADD = f"""
    INSERT INTO {ROLLUP_TABLE}
        (project_id, subscription_id, meter_id, hour, event_count, value_sum, value_min, value_max,
         last_matched_at)
    SELECT %s, subscription_id, meter_id, strftime('%%Y-%%m-%%d %%H:00:00', timestamp),
           count(*), sum(value), min(value), max(value), max(matched_at)
    FROM {EVENT_TABLE}
    WHERE id IN (SELECT value FROM json_each(%s)) AND subscription_id IS NOT NULL
    GROUP BY 2, 3, 4 ORDER BY 2, 3, 4
    {_ROLLUP_UPSERT}
"""  # noqa: S608 - module constants only; every value is a parameter

_PG_ROLLUP_ADD = f"""
    INSERT INTO {ROLLUP_TABLE}
        (project_id, subscription_id, meter_id, hour, event_count, value_sum, value_min, value_max,
         last_matched_at)
    SELECT %s, subscription_id, meter_id, date_trunc('hour', timestamp, 'UTC'),
           count(*), sum(value), min(value), max(value), max(matched_at)
    FROM {EVENT_TABLE}
    WHERE id = ANY(%s::bigint[]) AND subscription_id IS NOT NULL
    GROUP BY 2, 3, 4 ORDER BY 2, 3, 4
    {_ROLLUP_UPSERT}
"""  # noqa: S608 - module constants only; every value is a parameter


@dataclass
class Inserted:
    public_ids: set[str]  # the rows inserted
    existing: dict[str, str]  # idempotency key → public id of the stored event, for the others


def events_insert(*, project_id: int, received_at: datetime, rows: list[EventRow]) -> Inserted:
    """Insert the rows whose idempotency key is new (and their rollups); say which went in and
    which stored events the others repeat.

    Must run inside a transaction. Rows must not repeat an idempotency key among themselves.
    """
    if not rows:
        return Inserted(set(), {})
    insert = _insert_postgresql if is_postgresql() else _insert_sqlite
    outcome = insert(project_id, received_at, rows)
    missing = [
        row.idempotency_key
        for row in rows
        if row.public_id not in outcome.public_ids and row.idempotency_key not in outcome.existing
    ]
    if missing:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT idempotency_key, public_id FROM {EVENT_TABLE} "  # noqa: S608 - placeholders only
                f"WHERE project_id = %s AND idempotency_key IN ({', '.join(['%s'] * len(missing))})",
                [project_id, *missing],
            )
            outcome.existing.update(cursor.fetchall())
    return outcome


def _insert_postgresql(project_id: int, received_at: datetime, rows: list[EventRow]) -> Inserted:
    # The batch travels as one JSON text of positional arrays, the already serialized properties
    # spliced in as they are: binding eleven arrays instead cost more in psycopg's array quoting
    # than the INSERT costs PostgreSQL.
    batch = orjson.dumps(
        [
            (
                row.public_id,
                row.customer_external_id,
                row.meter_code,
                str(row.value),
                row.timestamp,
                row.idempotency_key,
                row.customer_id,
                row.meter_id,
                row.subscription_id,
                row.unmatched_reason,
                orjson.Fragment(row.properties),
            )
            for row in rows
        ]
    ).decode()
    found = fetch_prepared(_PG_INSERT, [batch, project_id, received_at, received_at, project_id, project_id])
    return Inserted(
        public_ids={public_id for public_id, key in found if key is None},
        existing={key: public_id for public_id, key in found if key is not None},
    )


def _insert_sqlite(project_id: int, received_at: datetime, rows: list[EventRow]) -> Inserted:
    adapt = connection.ops.adapt_datetimefield_value
    received = adapt(received_at)
    params: list = []
    for row in rows:
        params += (
            row.public_id, project_id, row.customer_external_id, row.meter_code, str(row.value),
            adapt(row.timestamp), row.properties, row.idempotency_key, received, row.customer_id,
            row.meter_id, row.subscription_id, row.unmatched_reason,
            None if row.subscription_id is None else received,
        )  # fmt: skip
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EVENT_TABLE} ({EVENT_COLUMNS}) VALUES {values} "  # noqa: S608 - placeholders only
            "ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING id, public_id, subscription_id",
            params,
        )
        inserted = cursor.fetchall()
    rollup_add(project_id=project_id, event_ids=[pk for pk, _, subscription in inserted if subscription])
    # SQLite has one writer at a time: the events the others repeat are read with the query above.
    return Inserted(public_ids={public_id for _, public_id, _ in inserted}, existing={})


def rollup_add(*, project_id: int, event_ids: list[int]) -> None:
    """Add these (newly matched) events to their hourly rollups. Inside the transaction that
    matched them, so a rollup always equals its events."""
    if not event_ids:
        return
    with connection.cursor() as cursor:
        if is_postgresql():
            cursor.execute(_PG_ROLLUP_ADD, [project_id, event_ids])
        else:
            cursor.execute(_SQLITE_ROLLUP_ADD, [project_id, json.dumps(event_ids)])
