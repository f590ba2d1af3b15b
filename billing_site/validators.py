"""Field validators shared by models and serializers, each with a stable error code."""

import re
import zoneinfo
from functools import lru_cache

from babel import Locale
from babel.localedata import locale_identifiers
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


# An email address the way the API documents it (OpenAPI `pattern`) and checks it, the same rule
# in both: a dot-atom local part (no quoted strings) at a host name with a top-level domain (no
# address literals, no bare host). Django's validator is a little wider; this is what every
# mailer and invoice reader takes.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL_PATTERN = rf"^{_ATOM}(\.{_ATOM})*@([A-Za-z0-9]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}$"
MAX_EMAIL_LENGTH = 254
validate_email_address = PatternValidator(EMAIL_PATTERN, "Enter a valid email address.", "invalid_email")


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


@lru_cache(maxsize=1)
def locales() -> frozenset[str]:
    """CLDR locale identifiers babel knows (en_US, de_DE, fr, pt_BR, …)."""
    return frozenset(locale_identifiers())


def validate_locale(value: str) -> None:
    if value not in locales():
        raise ValidationError(
            f"{value!r} is not a locale (e.g. en_US, de_DE, fr_FR, ja_JP).", code="invalid_locale"
        )


MAX_INVOICE_RECIPIENTS = 10


def validate_email_list(value) -> None:
    """A JSON list of at most MAX_INVOICE_RECIPIENTS distinct email addresses."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("A list of email addresses.", code="invalid")
    if len(value) > MAX_INVOICE_RECIPIENTS:
        raise ValidationError(f"At most {MAX_INVOICE_RECIPIENTS} addresses.", code="max_length")
    for address in value:
        validate_email_address(address)
