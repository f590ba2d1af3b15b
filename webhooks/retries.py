"""When a failed delivery is tried again (DESIGN.md §5, Standard Webhooks' recommendation).

The first attempt runs as soon as the event commits; after a failure the next one waits the step
of the schedule below for that attempt, give or take RETRY_JITTER (so a receiver that comes back
is not hit by every queued delivery in the same second). A 429 or 503 with a longer Retry-After
waits that long instead, up to RETRY_AFTER_CAP. After the last step the delivery has failed.
"""

from datetime import timedelta

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
