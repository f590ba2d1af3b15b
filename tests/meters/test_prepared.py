"""The ingestion lookup and insert are prepared statements on PostgreSQL: prepared once per
connection, then reused by every request that connection serves."""

import pytest
from django.db import connection

from tests.meters.conftest import stored

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _prepared() -> dict[str, tuple[str, int]]:
    """The statements prepared on this connection through the protocol (not by SQL PREPARE):
    text → (name, executions)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, name, generic_plans + custom_plans FROM pg_prepared_statements "
            "WHERE NOT from_sql"
        )
        return {statement: (name, runs) for statement, name, runs in cursor.fetchall()}


def _ingestion(prepared: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """Of those, the insert of events and the lookups of what they name."""
    return {
        statement: found
        for statement, found in prepared.items()
        if "INSERT INTO meters_usageevent" in statement or "WITH named_subscription AS" in statement
    }


def _ran(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """The statements run in between. Earlier tests may have used this connection already, and a
    lookup's text depends on how many references it names: only the difference counts."""
    return {statement: found for statement, found in after.items() if found != before.get(statement)}


def test_ingestion_statements_are_prepared_once_and_reused(project, subscription, ingest):
    before = _ingestion(_prepared())

    assert ingest({"customer": "cus_8fq", "value": 1, "idempotency_key": "first"}).json()["accepted"] == 1
    first = _ingestion(_prepared())
    assert ingest({"customer": "cus_8fq", "value": 2, "idempotency_key": "second"}).json()["accepted"] == 1
    second = _ingestion(_prepared())

    ran = _ran(before, first)
    assert len(ran) == 2  # the insert and the lookup
    assert sum("INSERT INTO meters_usageevent" in statement for statement in ran) == 1
    assert second.keys() == first.keys()  # nothing prepared again
    assert _ran(first, second).keys() == ran.keys()
    for statement, (name, runs) in ran.items():
        assert second[statement] == (name, runs + 1)  # the same prepared statement, run once more
        if statement in before:
            assert before[statement] == (name, runs - 1)
        else:
            assert runs == 1
    assert [event.value for event in stored(project)] == [1, 2]


def test_a_duplicate_runs_the_same_prepared_insert(project, subscription, ingest):
    ingest({"customer": "cus_8fq", "value": 1, "idempotency_key": "once"})
    first = _ingestion(_prepared())

    result = ingest({"customer": "cus_8fq", "value": 1, "idempotency_key": "once"}).json()

    assert result["accepted"] == 0
    second = _ingestion(_prepared())
    ran = _ran(first, second)
    assert len(ran) == 2  # the insert and the lookup, already prepared by the first request
    assert second.keys() == first.keys()
    for statement, (name, runs) in ran.items():
        assert first[statement] == (name, runs - 1)
    assert len(stored(project)) == 1
