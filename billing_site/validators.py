"""Field validators shared by models and serializers, each with a stable error code."""

import zoneinfo
from functools import lru_cache

from django.core.exceptions import ValidationError

from billing_site.errors import InvalidInput
from billing_site.money import is_currency


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_currency(value: str) -> None:
    if not is_currency(value):
        raise ValidationError(
            f"{value!r} is not an ISO 4217 currency code in use (e.g. USD, EUR, JPY).",
            code="invalid_currency",
        )


def validate_timezone(value: str) -> None:
    if value not in _timezones():
        raise ValidationError(
            f"{value!r} is not an IANA time zone (e.g. America/New_York).", code="invalid_timezone"
        )


def check(validator, value, *, param: str) -> None:
    """Run a field validator in a service, turning its failure into an API error naming `param`."""
    try:
        validator(value)
    except ValidationError as exc:
        raise InvalidInput(exc.messages[0], code=exc.code or "invalid", param=param) from None
