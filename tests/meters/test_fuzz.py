"""Fuzzed bodies never cause a 5xx: a clear 4xx that stores nothing, or a 200 that stores exactly
what it reports."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Scope
from meters.models import UsageEvent
from tests.conftest import api_client

pytestmark = pytest.mark.django_db

FUZZ_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        ["\u0000", "\ud800", "1e999", "NaN", "-0", "0.1234567890123", " 5", "2026-01-15T11:00:00Z"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "customer": st.one_of(st.sampled_from(["cus_8fq", "stranger"]), json_values),
        "meter": st.one_of(st.just("api_calls"), json_values),
        "event_name": json_values,
        "value": json_values,
        "units": json_values,
        "timestamp": st.one_of(
            st.sampled_from(["2026-01-10T00:00:00Z", "2026-01-15T13:00:00Z"]), json_values
        ),
        "properties": json_values,
        "idempotency_key": st.one_of(st.text(max_size=10), json_values),
    },
)
bodies = st.one_of(
    json_values,
    st.lists(st.one_of(fields, json_values), max_size=5),
    st.fixed_dictionaries({"events": st.one_of(st.lists(fields, max_size=5), json_values)}),
    fields,
).map(lambda body: json.dumps(body).encode())
raw_bytes = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"[]",
            b'{"events": []}',
            b'{"customer": "cus_8fq", "value": NaN}',
            b'[{"customer": "cus_8fq", "value": Infinity}]',
            b'{"customer": "cus_8fq", "value": 1, "properties": ' + b'{"a": ' * 50 + b"1" + b"}" * 51,
            b'{"customer": "\xc3\x28", "value": 1}',
            b'[{"customer": "cus_8fq", "value": 123456789012345678901234567890}]',
            b"[" * 5000 + b"]" * 5000,
        ]
    ),
)


def _check(client, body: bytes) -> None:
    before = UsageEvent.objects.count()

    response = client.post("/v1/usage", body, content_type="application/json")

    assert response.status_code in (200, 400, 413, 422), response.content[:500]
    answer = response.json()
    stored = UsageEvent.objects.count() - before
    if response.status_code == 200:
        assert stored == answer["accepted"] + answer["unmatched"]
        assert (
            len(answer["results"])
            == answer["accepted"] + answer["duplicates"] + answer["unmatched"] + answer["rejected"]
        )
    else:
        assert answer["error"]["code"]
        assert stored == 0


@FUZZ_SETTINGS
@given(body=bodies)
def test_fuzzed_json_bodies(project, subscription, body):
    _check(api_client(project, [Scope.USAGE_WRITE]), body)


@FUZZ_SETTINGS
@given(body=raw_bytes)
def test_fuzzed_bytes(project, subscription, body):
    _check(api_client(project, [Scope.USAGE_WRITE]), body)
