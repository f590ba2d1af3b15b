"""Shared actors for the usage tests: a metered customer the way the seeds describe one."""

from datetime import UTC, datetime

import pytest
import time_machine

from accounts.models import Scope
from meters.models import UsageEvent
from tests.catalog.factories import CustomerFactory, MeterFactory, make_plan, subscribe
from tests.conftest import api_client

# Every test runs at this instant unless it travels elsewhere: mid-January, periods are months.
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
JANUARY = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen_now():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def meter(project):
    return MeterFactory(project=project, code="api_calls", name="API calls", unit="calls")


@pytest.fixture
def customer(project):
    return CustomerFactory(project=project, external_id="cus_8fq")


@pytest.fixture
def plan(project, meter):
    return make_plan(project, charges=[{"meter": meter, "pricing_model": "per_unit", "unit_price": "0.01"}])


@pytest.fixture
def subscription(customer, plan):
    return subscribe(customer, plan, starts_at=JANUARY)


@pytest.fixture
def ingest(project):
    """A client whose key may only report usage, as a client app's would."""
    client = api_client(project, [Scope.USAGE_WRITE])

    def post(body, **extra):
        return client.post("/v1/usage", body, format="json", **extra)

    post.client = client
    return post


def stored(project) -> list[UsageEvent]:
    return list(UsageEvent.objects.filter(project=project).order_by("id"))


def record(project, *events: dict, **common) -> list[str]:
    """Ingest events through the service (as the API does); their ids. Fails on any rejection."""
    from meters.services import usage_ingest

    outcome = usage_ingest(project=project, events=[{**common, **event} for event in events])
    assert outcome.rejected == 0, outcome.results
    return [result["id"] for result in outcome.results]


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> str:
    """An ISO timestamp in January 2026."""
    return datetime(2026, 1, day, hour, minute, second, tzinfo=UTC).isoformat()
