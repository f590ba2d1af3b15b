"""When a failed delivery is tried again (DESIGN.md §5, Standard Webhooks' recommendation).

The first attempt runs as soon as the event commits; after a failure the next one waits the step
of the schedule below for that attempt, give or take RETRY_JITTER (so a receiver that comes back
is not hit by every queued delivery in the same second). A 429 or 503 with a longer Retry-After
waits that long instead, up to RETRY_AFTER_CAP. After the last step the delivery has failed.

An attempt may also be made early, before its retry is due: a probe of an endpoint that is failing
(PROBE_AFTER), or a catch-up once the endpoint has come back (CATCH_UP_AFTER). A failed early
attempt does not count: the delivery goes back to the retry it had planned.
"""

from datetime import datetime, timedelta

RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
RETRY_JITTER = 0.1  # ±10 % of each step
RETRY_AFTER_CAP = timedelta(hours=24)
# An endpoint with no successful delivery for this long while failing is disabled.
DISABLE_FAILING_AFTER = timedelta(days=5)
# A failing endpoint whose pending deliveries have had no attempt for this long, and none is due,
# gets a probe: its oldest pending delivery is tried early. So a receiver that comes back is noticed
# within this plus the minute between runs of the scheduled job, even when every retry is hours
# away; and a receiver that stays down gets at most one probe per endpoint in this time.
PROBE_AFTER = timedelta(minutes=10)
# A success that ends a failure streak at least this long brings the endpoint's pending deliveries
# forward (the catch-up). A shorter streak is not an outage, and must not trigger one: otherwise a
# delivery the receiver always refuses, on an endpoint whose other deliveries succeed, would be sent
# again after every success. Not longer than PROBE_AFTER, so a successful probe always catches up.
CATCH_UP_AFTER = PROBE_AFTER


def retry_delay(*, attempts_made: int, retry_after: timedelta | None, jitter: float) -> timedelta | None:
    """How long to wait before the next attempt, or None when no attempt is left.

    `jitter` is between -1 and 1 (random in production): the step is scaled by 1 + RETRY_JITTER × jitter.
    """
    if attempts_made >= MAX_ATTEMPTS:
        return None
    delay = RETRY_DELAYS[attempts_made - 1] * (1 + RETRY_JITTER * jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay


def retry_after_early_failure(*, planned: datetime, now: datetime, retry_after: timedelta | None) -> datetime:
    """When to try again after a failed early attempt: the retry that was planned (the early attempt
    does not count), or later if a 429 or 503 asked for longer, up to RETRY_AFTER_CAP."""
    if retry_after is None:
        return planned
    return max(planned, now + min(retry_after, RETRY_AFTER_CAP))
