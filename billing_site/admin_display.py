"""How the back office shows money, prices and quantities: one helper for every admin page.

It is billing_site.formats (babel, CLDR) with the project's locale, the same as the PDF and the
email: amounts with their currency and its number of decimals ("$1,234.50", "¥1,235",
"1.234,50 €"), unit prices with every decimal they have, quantities without trailing zeros.

- `money_column("total")`, `price_column("unit_price")`, `quantity_column("quantity")` make the
  `@admin.display` methods of list and detail pages; the currency and the project are found on the
  object by a path ("currency", "invoice__currency").
- `money_text(obj, amount)` formats any amount the same way inside a custom display.
- `DecimalInput` shows a decimal in a form without its trailing zeros (49, not 49.000000000000);
  ProjectScopedAdmin and its inlines use it for every DecimalField.
"""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.db import models

from billing_site import formats
from billing_site.money import decimal_string

DEFAULT_LOCALE = "en_US"
EMPTY = "-"


def follow(obj: Any, path: str) -> Any:
    """`follow(line, "invoice__currency")` is line.invoice.currency (None if a step is None)."""
    for step in path.split("__"):
        if obj is None:
            return None
        obj = getattr(obj, step)
    return obj


def locale_of(obj: Any, project: str = "project") -> str:
    found = follow(obj, project)
    return getattr(found, "locale", None) or DEFAULT_LOCALE


def money_text(
    obj: Any, amount: Decimal | None, *, currency: str = "currency", project: str = "project"
) -> str:
    """An amount of `obj` in its currency, as its project writes money."""
    if amount is None:
        return EMPTY
    return formats.money(Decimal(amount), follow(obj, currency), locale_of(obj, project))


def price_text(
    obj: Any, amount: Decimal | None, *, currency: str = "currency", project: str = "project"
) -> str:
    if amount is None:
        return EMPTY
    return formats.unit_price(Decimal(amount), follow(obj, currency), locale_of(obj, project))


def quantity_text(obj: Any, value: Decimal | None, *, project: str = "project") -> str:
    return EMPTY if value is None else formats.quantity(Decimal(value), locale_of(obj, project))


def _column(
    field: str, text: Callable[..., str], description: str | None, ordering: str | None, **paths: str
) -> Callable[[Any, Any], str]:
    @admin.display(description=description or field.replace("_", " "), ordering=ordering or field)
    def show(model_admin, obj) -> str:
        return text(obj, follow(obj, field), **paths)

    return show


def money_column(
    field: str,
    *,
    description: str | None = None,
    currency: str = "currency",
    project: str = "project",
    ordering: str | None = None,
) -> Callable[[Any, Any], str]:
    """An admin display of an amount field: `total_label = money_column("total", description="total")`."""
    return _column(field, money_text, description, ordering, currency=currency, project=project)


def price_column(
    field: str,
    *,
    description: str | None = None,
    currency: str = "currency",
    project: str = "project",
    ordering: str | None = None,
) -> Callable[[Any, Any], str]:
    return _column(field, price_text, description, ordering, currency=currency, project=project)


def quantity_column(
    field: str, *, description: str | None = None, project: str = "project", ordering: str | None = None
) -> Callable[[Any, Any], str]:
    return _column(field, quantity_text, description, ordering, project=project)


class DecimalInput(forms.NumberInput):
    """A decimal as typed, not as stored: 49 rather than 49.000000000000, 0.002 rather than
    0.002000000000."""

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, Decimal):
            return decimal_string(value)
        return super().format_value(value)


class DecimalInputs:
    """For a ModelAdmin or an inline: every DecimalField of its forms uses DecimalInput."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.DecimalField) and "widget" not in kwargs:
            kwargs["widget"] = DecimalInput(attrs={"step": "any"})
        return super().formfield_for_dbfield(db_field, request, **kwargs)
