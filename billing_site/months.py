"""Calendar months in UTC, as the dashboard and the admin's list filters name them: "2026-11".

A month is the date of its first day. Only months within the range the API accepts moments in
(billing_site.moments: 2000-01 to 2099-12) are parsed, so a typed `9999-12` is refused like any
malformed value instead of overflowing the calendar.
"""

import re
from datetime import UTC, date, datetime

from billing_site.moments import MOMENT_MAX, MOMENT_MIN

_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
FIRST_YEAR, LAST_YEAR = MOMENT_MIN.year, MOMENT_MAX.year - 1


def month_of(moment: datetime) -> date:
    """The first day of the UTC calendar month `moment` falls in."""
    return moment.astimezone(UTC).date().replace(day=1)


def add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def month_span(month: date) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month), UTC."""
    return (
        datetime(month.year, month.month, 1, tzinfo=UTC),
        datetime.combine(add_months(month, 1), datetime.min.time(), tzinfo=UTC),
    )


def month_parse(text: str) -> date | None:
    """ "2026-11" as the month's first day; None for anything else, or a month out of range."""
    found = _MONTH.fullmatch(text.strip())
    if found is None:
        return None
    year, month = int(found.group(1)), int(found.group(2))
    return date(year, month, 1) if FIRST_YEAR <= year <= LAST_YEAR else None


def month_param(month: date) -> str:
    """A month as list filters take it: "2026-11"."""
    return f"{month:%Y-%m}"


def recent_months(now: datetime, count: int) -> list[date]:
    """This month and the `count - 1` before it, latest first."""
    this_month = month_of(now)
    return [add_months(this_month, -offset) for offset in range(count)]
