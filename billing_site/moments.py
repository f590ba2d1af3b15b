"""Moments in time the API accepts: ISO 8601 as RFC 3339 writes it, converted to UTC, within one
documented range.

Every date and time a request carries (subscription starts and ends, usage timestamps, list
filters, previews) goes through `moment_parse`, so one rule holds everywhere (docs/api.md, "Time"):

- RFC 3339 date-times, `2024-07-15T11:30:00Z` or with an offset (`+02:00`); `t` and `z` may be
  lower case, the fraction has any length (it is kept to the microsecond), and a leap second
  (`:60`) is the last microsecond of its minute. The result is UTC: PostgreSQL refuses offsets
  beyond ±15:59 in its own parser, so nothing leaves Python with one.
- A date alone, `2024-05-01`, is midnight UTC; a date and time without an offset is UTC.
- Nothing else (week dates, ordinal dates, a space for the T, minutes without seconds): the OpenAPI
  schema of a moment (MOMENT_SCHEMA) states exactly these three forms.
- Only moments in [MOMENT_MIN, MOMENT_MAX) are accepted. Billing arithmetic (periods, proration,
  catch-up invoices) then never meets the calendar's edges (year 1, year 9999), and a typo such as
  year 0024 is refused instead of billing two thousand years. A well-formed moment outside the range
  is 422 `date_out_of_range` (the schema states the forms; the range is in the description).
"""

import re
from datetime import UTC, datetime, timedelta, timezone

MOMENT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
MOMENT_MAX = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
MAX_MOMENT_LENGTH = 1000
RANGE_TEXT = "between 2000-01-01T00:00:00Z and 2099-12-31T23:59:59Z"

_MOMENT = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?P<fraction>\.[0-9]+)?"
    r"(?P<offset>[Zz]|(?P<sign>[+-])(?P<offset_hours>[0-9]{2}):(?P<offset_minutes>[0-9]{2}))?)?"
)

# A valid month and day, leap years included, as a regular expression: the schema's pattern for a
# date and time without an offset (the two other forms are the formats date-time and date).
_LEAP_YEAR = r"([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
)
LOCAL_DATE_TIME_PATTERN = (
    rf"^([0-9]{{4}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?$"
)


class MomentError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def moment_in_range(moment: datetime) -> bool:
    return MOMENT_MIN <= moment < MOMENT_MAX


def _out_of_range() -> MomentError:
    return MomentError("date_out_of_range", f"Dates and times must be {RANGE_TEXT}.")


def moment_check(moment: datetime) -> datetime:
    """An aware datetime as UTC, or MomentError when it is outside the accepted range."""
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable UTC moment
        raise _out_of_range() from None
    if not moment_in_range(moment):
        raise _out_of_range()
    return moment


def moment_parse(text: object) -> datetime:
    """A date, or a date and time (a string), as an aware UTC datetime in the range."""
    invalid = MomentError(
        "invalid_datetime",
        "An RFC 3339 date and time, e.g. 2024-07-15T11:30:00Z, or a date, e.g. 2024-07-15.",
    )
    if not isinstance(text, str) or len(text) > MAX_MOMENT_LENGTH:
        raise invalid
    found = _MOMENT.fullmatch(text)
    if found is None:
        raise invalid
    parts = found.groupdict()
    year = int(parts["year"])
    if year == 0:  # RFC 3339 has a year 0; Python's calendar does not, and the range would refuse it
        raise _out_of_range()
    second = int(parts["second"] or 0)
    leap = second == 60 and parts["offset"] is not None  # only RFC 3339 date-times have leap seconds
    zone = UTC
    if parts["sign"]:
        hours, minutes = int(parts["offset_hours"]), int(parts["offset_minutes"])
        if hours > 23 or minutes > 59:
            raise invalid
        delta = timedelta(hours=hours, minutes=minutes)
        zone = timezone(-delta if parts["sign"] == "-" else delta)
    try:
        moment = datetime(
            year,
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            59 if leap else second,
            999_999 if leap else int((parts["fraction"] or ".0")[1:7].ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError:
        raise invalid from None
    return moment_check(moment)
