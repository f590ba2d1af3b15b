"""Moments in time the API accepts: ISO 8601, converted to UTC, within one documented range.

Every date and time a request carries (subscription starts and ends, usage timestamps, list
filters, previews) goes through `moment_parse`, so one rule holds everywhere (docs/api.md, "Time"):

- An offset is applied and the result is UTC; a time without an offset is UTC. PostgreSQL refuses
  offsets beyond ±15:59 in its own parser, so nothing leaves Python with one.
- A date alone ("2024-05-01") means midnight UTC.
- Only moments in [MOMENT_MIN, MOMENT_MAX) are accepted. Billing arithmetic (periods, proration,
  catch-up invoices) then never meets the calendar's edges (year 1, year 9999), and a typo such as
  year 0024 is refused instead of billing two thousand years. A well-formed moment outside the range
  is 422 `date_out_of_range` (the schema states the format, `date-time`; the range is in the
  description: a pattern on top of the format would make the schema describe almost no value).
"""

from datetime import UTC, datetime

MOMENT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
MOMENT_MAX = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
MAX_MOMENT_LENGTH = 64
RANGE_TEXT = "between 2000-01-01T00:00:00Z and 2099-12-31T23:59:59Z"


class MomentError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def moment_in_range(moment: datetime) -> bool:
    return MOMENT_MIN <= moment < MOMENT_MAX


def moment_check(moment: datetime) -> datetime:
    """An aware datetime as UTC, or MomentError when it is outside the accepted range."""
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable UTC moment
        moment = None
    if moment is None or not moment_in_range(moment):
        raise MomentError("date_out_of_range", f"Dates and times must be {RANGE_TEXT}.")
    return moment


def moment_parse(text: object) -> datetime:
    """An ISO 8601 date or date and time (a string) as an aware UTC datetime in the range."""
    invalid = MomentError("invalid_datetime", "An ISO 8601 date and time, e.g. 2024-07-15T11:30:00Z.")
    if not isinstance(text, str) or not text or len(text) > MAX_MOMENT_LENGTH:
        raise invalid
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid from None
    return moment_check(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
