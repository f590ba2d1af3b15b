"""Billing periods: half-open [start, end) intervals, computed in the subscription's time zone.

The grid of period boundaries is counted from an anchor instant (the subscription's start, or
the moment a plan change reset the cycle):

- anniversary: boundary k is the anchor's local date and time plus k × (interval × count),
  always computed from the anchor, never from the previous boundary, with the day of the month
  clamped to the month's length. Anchored on 31 January: 28 February (29 in a leap year),
  31 March, 30 April, 31 May. Anchored on 29 February: 28 February in the following years.
- calendar: boundaries fall at local midnight at the start of the calendar unit: every day,
  Monday (week), the 1st (month), 1 January/April/July/October (quarter), 1 January (year);
  with a count n, every n-th such boundary from the one at or before the anchor. The first
  period runs from the anchor to the next boundary (a partial period; its base fee is prorated).

Local times become UTC through zoneinfo. A local midnight skipped by a daylight-saving change
becomes the first instant of that local day; an ambiguous local time means its first occurrence.
"""

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_MONTHS = {"month": 1, "quarter": 3, "year": 12}
_DAYS = {"day": 1, "week": 7}


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def _shift(local: datetime, interval: str, steps: int) -> datetime:
    """A naive local datetime moved by `steps` intervals, clamping the day of the month."""
    if interval in _DAYS:
        return local + timedelta(days=_DAYS[interval] * steps)
    year, month = divmod(local.month - 1 + _MONTHS[interval] * steps, 12)
    year += local.year
    month += 1
    return local.replace(year=year, month=month, day=min(local.day, calendar.monthrange(year, month)[1]))


def _origin(anchor_local: datetime, interval: str, anniversary: bool) -> datetime:
    if anniversary:
        return anchor_local
    midnight = anchor_local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "day":
        return midnight
    if interval == "week":
        return midnight - timedelta(days=midnight.weekday())
    if interval == "month":
        return midnight.replace(day=1)
    if interval == "quarter":
        return midnight.replace(day=1, month=(midnight.month - 1) // 3 * 3 + 1)
    return midnight.replace(day=1, month=1)


@dataclass(frozen=True)
class PeriodGrid:
    anchor: datetime  # aware
    timezone: str
    interval: str
    interval_count: int
    anniversary: bool

    def __post_init__(self) -> None:
        if self.interval not in _DAYS and self.interval not in _MONTHS:
            raise ValueError(f"unknown interval {self.interval!r}")
        if self.interval_count < 1:
            raise ValueError("interval_count must be at least 1")

    @property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _origin_local(self) -> datetime:
        local = self.anchor.astimezone(self._zone).replace(tzinfo=None)
        return _origin(local, self.interval, self.anniversary)

    def boundary(self, k: int) -> datetime:
        """The k-th boundary of the grid, in UTC (k = 0 is at or before the anchor)."""
        local = _shift(self._origin_local(), self.interval, k * self.interval_count)
        return local.replace(tzinfo=self._zone).astimezone(UTC)

    def _estimate(self, moment: datetime) -> int:
        origin = self._origin_local()
        local = moment.astimezone(self._zone).replace(tzinfo=None)
        if self.interval in _DAYS:
            units = (local - origin).days / _DAYS[self.interval]
        else:
            units = ((local.year - origin.year) * 12 + local.month - origin.month) / _MONTHS[self.interval]
        return int(units // self.interval_count)

    def period_at(self, moment: datetime) -> Period:
        """The period containing `moment`; the first period starts at the anchor itself."""
        if moment < self.anchor:
            raise ValueError(f"{moment.isoformat()} is before the grid's anchor {self.anchor.isoformat()}")
        nominal = self.nominal_period_at(moment)
        return Period(start=max(nominal.start, self.anchor.astimezone(UTC)), end=nominal.end)

    def period_after(self, period: Period) -> Period:
        return self.period_at(period.end)

    def nominal_period_at(self, moment: datetime) -> Period:
        """The whole grid period containing `moment`, not clipped to the anchor: what a partial
        first period's fees are prorated against (15 January → all of January)."""
        k = self._estimate(moment)
        while self.boundary(k) > moment:
            k -= 1
        while self.boundary(k + 1) <= moment:
            k += 1
        return Period(start=self.boundary(k), end=self.boundary(k + 1))
