"""The pure rules behind deliveries: the retry schedule, type filters, Retry-After, public addresses."""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Q

from webhooks.retries import MAX_ATTEMPTS, retry_after_early_failure, retry_delay
from webhooks.selectors import event_type_matches, event_types_query
from webhooks.transport import address_is_public, parse_retry_after


@pytest.mark.parametrize(
    ("attempts_made", "jitter", "expected"),
    [
        (1, 0, timedelta(seconds=5)),
        (2, 0, timedelta(minutes=5)),
        (3, 0, timedelta(minutes=30)),
        (4, 0, timedelta(hours=2)),
        (5, 0, timedelta(hours=5)),
        (6, 0, timedelta(hours=10)),
        (7, 0, timedelta(hours=14)),
        (8, 0, timedelta(hours=20)),
        (9, 0, timedelta(hours=24)),
        (10, 0, None),
        (1, 1, timedelta(seconds=5.5)),
        (1, -1, timedelta(seconds=4.5)),
        (9, 1, timedelta(hours=26, minutes=24)),
        (9, -1, timedelta(hours=21, minutes=36)),
    ],
)
def test_the_retry_schedule_with_jitter(attempts_made, jitter, expected):
    assert retry_delay(attempts_made=attempts_made, retry_after=None, jitter=jitter) == expected


@pytest.mark.parametrize(
    ("attempts_made", "retry_after", "expected"),
    [
        (1, timedelta(seconds=2), timedelta(seconds=5)),  # shorter than the schedule: ignored
        (1, timedelta(hours=1), timedelta(hours=1)),
        (4, timedelta(days=3), timedelta(hours=24)),  # capped
        (MAX_ATTEMPTS, timedelta(hours=1), None),  # nothing left to retry
    ],
)
def test_retry_after_lengthens_the_wait_up_to_a_day(attempts_made, retry_after, expected):
    assert retry_delay(attempts_made=attempts_made, retry_after=retry_after, jitter=0) == expected


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (None, timedelta(minutes=30)),  # back to the retry that was planned
        (timedelta(minutes=10), timedelta(minutes=30)),  # sooner than planned: the plan wins
        (timedelta(hours=2), timedelta(hours=2)),
        (timedelta(days=3), timedelta(hours=24)),  # capped
    ],
)
def test_a_failed_early_attempt_goes_back_to_the_planned_retry_or_later_if_asked(retry_after, expected):
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    assert (
        retry_after_early_failure(planned=now + timedelta(minutes=30), now=now, retry_after=retry_after)
        == now + expected
    )


def test_ten_attempts_span_about_three_days():
    total = sum((retry_delay(attempts_made=n, retry_after=None, jitter=0) for n in range(1, 10)), timedelta())

    assert total == timedelta(hours=75, minutes=35, seconds=5)


@pytest.mark.parametrize(
    ("event_type", "patterns", "matches"),
    [
        ("invoice.paid", [], True),
        ("invoice.paid", ["invoice.paid"], True),
        ("invoice.paid", ["invoice.*"], True),
        ("invoice.payment_failed", ["customer.*", "invoice.*"], True),
        ("invoice.paid", ["invoice.created"], False),
        ("invoices.paid", ["invoice.*"], False),
        ("invoice", ["invoice.*"], False),
        ("invoice.paid", ["invoice"], False),
    ],
)
def test_event_type_filters_match_in_python_as_in_sql(event_type, patterns, matches):
    assert event_type_matches(event_type, patterns) is matches


def test_the_sql_filter_is_built_from_the_same_patterns():
    assert event_types_query(["invoice.*", "customer.created"], field="event__type") == Q(
        event__type__startswith="invoice."
    ) | Q(event__type="customer.created")


NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("Mon, 02 Mar 2026 10:30:00 GMT", timedelta(minutes=90)),
        ("Mon, 02 Mar 2026 08:00:00 GMT", timedelta(0)),  # in the past: now
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header, expected):
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.31.255.255", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address checked, not bound
        ("255.255.255.255", False),
        ("224.0.0.251", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("ff02::1", False),
    ],
)
def test_only_public_unicast_addresses_may_receive_webhooks(address, public):
    assert address_is_public(ipaddress.ip_address(address)) is public
