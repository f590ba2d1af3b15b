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
    """Of those, the insert of events and the lookup of what they name."""
    return {
        statement: found
        for statement, found in prepared.items()
        if "INSERT INTO meters_usageevent" in statement or "WITH named_subscription AS" in statement
    }


def test_ingestion_statements_are_prepared_once_and_reused(project, subscription, ingest):
    # Earlier tests may have used this connection already: count from here.
    before = _prepared()

    assert ingest({"customer": "cus_8fq", "value": 1, "idempotency_key": "first"}).json()["accepted"] == 1
    first = _ingestion(_prepared())
    assert ingest({"customer": "cus_8fq", "value": 2, "idempotency_key": "second"}).json()["accepted"] == 1
    second = _ingestion(_prepared())

    assert len(first) == 2  # the insert and the lookup
    assert sum("INSERT INTO meters_usageevent" in statement for statement in first) == 1
    assert {statement: found[0] for statement, found in second.items()} == {
        statement: found[0] for statement, found in first.items()
    }  # the same statements under the same names: not prepared again
    for statement, (_, runs) in second.items():
        assert runs == first[statement][1] + 1
        assert runs == before.get(statement, ("", 0))[1] + 2
    assert [event.value for event in stored(project)] == [1, 2]


def test_a_duplicate_runs_the_same_prepared_insert(project, subscription, ingest):
    ingest({"customer": "cus_8fq", "value": 1, "idempotency_key": "once"})
    first = _ingestion(_prepared())

    result = ingest({"customer": "cus_8fq", "value": 1, "idempotency_key": "once"}).json()

    assert result["accepted"] == 0
    second = _ingestion(_prepared())
    assert second.keys() == first.keys()
    assert all(runs == first[statement][1] + 1 for statement, (_, runs) in second.items())
    assert len(stored(project)) == 1
