"""Field validators shared by models and serializers, each with a stable error code."""

import re
import zoneinfo
from functools import lru_cache

from babel import Locale
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils.deconstruct import deconstructible

from billing_site.errors import InvalidInput
from billing_site.money import is_currency


@lru_cache(maxsize=1)
def timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@lru_cache(maxsize=64)
def pattern_regex(pattern: str) -> re.Pattern:
    """A JSON Schema (ECMA-262) pattern as Python must read it to agree: there, `$` ends the text;
    Python's `$` also matches before a final newline, which would let "abc\n" through "^[a-z]+$"."""
    return re.compile(re.sub(r"\$$", r"\\Z", pattern))


@deconstructible
class PatternValidator(RegexValidator):
    """RegexValidator reading its `^…$` pattern as the OpenAPI schema that publishes it does."""

    def __call__(self, value) -> None:
        if not pattern_regex(self.regex.pattern).search(str(value)):
            raise ValidationError(self.message, code=self.code, params={"value": value})


@lru_cache(maxsize=1)
def countries() -> list[str]:
    """ISO 3166 alpha-2 codes, upper case, from CLDR (babel)."""
    return sorted(code for code in Locale("en").territories if code.isalpha() and len(code) == 2)


def validate_currency(value: str) -> None:
    if not is_currency(value):
        raise ValidationError(
            f"{value!r} is not an ISO 4217 currency code in use (e.g. USD, EUR, JPY).",
            code="invalid_currency",
        )


def validate_timezone(value: str) -> None:
    if value not in timezones():
        raise ValidationError(
            f"{value!r} is not an IANA time zone (e.g. America/New_York).", code="invalid_timezone"
        )


def check(validator, value, *, param: str) -> None:
    """Run a field validator in a service, turning its failure into an API error naming `param`."""
    try:
        validator(value)
    except ValidationError as exc:
        raise InvalidInput(exc.messages[0], code=exc.code or "invalid", param=param) from None
