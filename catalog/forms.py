"""Admin forms for priced items, contracts and customers: the same validation as the API, shown on
the field."""

import json
import posixpath
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from babel import Locale
from django import forms
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from billing_site.admin import SameProjectForm
from billing_site.api.json_values import METADATA_SCHEMA
from billing_site.errors import DomainError
from billing_site.money import decimal_string
from billing_site.validators import countries, validate_email_list
from catalog.models import MAX_CONTRACT_BYTES, Contract, Customer
from catalog.pricing import PRICING_FIELDS, PricingModel, clean_pricing
from catalog.services import ADDRESS_FIELDS

OPEN_ENDED = {"*", "∞", "inf", ""}
TIER_COLUMNS = (
    ("up_to", "up to"),
    ("unit_price", "unit price (graduated percentage: rate %)"),
    ("flat_fee", "flat fee"),
)
EMPTY_TIER_ROWS = 3


def _shown(value: Any) -> str:
    """A tier's number as typed, without trailing zeros (0.1, not 0.100000); what does not parse as it
    was typed."""
    if value is None:
        return ""
    try:
        return decimal_string(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


def _tier_cells(tier: dict[str, Any]) -> tuple[str, str, str]:
    """up to | unit price (a graduated_percentage tier's rate) | flat fee, as the table shows them."""
    price = tier["rate"] if "rate" in tier else tier.get("unit_price")
    return _shown(tier.get("up_to")), _shown(price), _shown(tier.get("flat_fee"))


class TiersWidget(forms.Widget):
    """Tiers as a table of inputs: a row per tier, then a few empty rows for new ones. Posts
    `<name>-<row>-up_to`, `<name>-<row>-unit_price` and `<name>-<row>-flat_fee` (the name carries
    an inline formset's prefix: `charges-0-tiers-1-up_to`); empty rows are left out."""

    def value_from_datadict(self, data, files, name: str) -> list[dict[str, str]]:
        cell = re.compile(rf"{re.escape(name)}-(\d+)-(?:{'|'.join(column for column, _ in TIER_COLUMNS)})")
        rows = sorted({int(found.group(1)) for key in data if (found := cell.fullmatch(key))})
        tiers = []
        for row in rows:
            tier = {column: (data.get(f"{name}-{row}-{column}") or "").strip() for column, _ in TIER_COLUMNS}
            if any(tier.values()):
                tiers.append(tier)
        return tiers

    def value_omitted_from_data(self, data, files, name: str) -> bool:
        return not any(key.startswith(f"{name}-") for key in data)

    def id_for_label(self, id_: str) -> str:
        return f"{id_}-0-up_to" if id_ else id_

    def render(self, name, value, attrs=None, renderer=None) -> SafeString:
        tiers = value if isinstance(value, list) else []
        rows = [*(_tier_cells(tier) for tier in tiers), *[("", "", "")] * EMPTY_TIER_ROWS]
        base_id = (attrs or {}).get("id") or f"id_{name}"
        head = format_html_join("", "<th>{}</th>", ((label,) for _, label in TIER_COLUMNS))
        body = format_html_join(
            "", "<tr>{}</tr>", ((self._row(name, base_id, row, cells),) for row, cells in enumerate(rows))
        )
        return format_html(
            '<table class="tiers"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body
        )

    @staticmethod
    def _row(name: str, base_id: str, row: int, cells: tuple[str, str, str]) -> SafeString:
        return format_html_join(
            "",
            '<td><input type="text" inputmode="decimal" size="12" name="{0}-{1}-{2}" id="{3}-{1}-{2}" '
            'value="{4}" placeholder="{5}" aria-label="tier {6}: {7}"></td>',
            (
                (name, row, column, base_id, text, "∞" if column == "up_to" else "", row + 1, label)
                for (column, label), text in zip(TIER_COLUMNS, cells, strict=True)
            ),
        )


class TiersField(forms.Field):
    """Tiers as a table a finance person can read and type: up to (inclusive; empty for the
    open-ended last tier) | unit price | flat fee, a row per tier."""

    widget = TiersWidget

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text",
            "Graduated, volume, stairstep and graduated percentage only. A row per tier: up to "
            "(inclusive; empty, or ∞, for the open-ended last tier, or a number with an overage unit "
            "price) | unit price (graduated percentage: rate in %) | flat fee (empty: 0). Empty rows are "
            "ignored. Stairstep charges each tier's flat fee.",
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[dict[str, str | None]]:
        tiers = []
        for number, tier in enumerate(value or [], start=1):
            if not tier.get("unit_price"):
                raise ValidationError(f"Tier {number}: give its unit price.", code="invalid_tier")
            up_to = tier.get("up_to") or ""
            tiers.append(
                {
                    "up_to": None if up_to.lower() in OPEN_ENDED else up_to,
                    "unit_price": tier["unit_price"],
                    "flat_fee": tier.get("flat_fee") or "0",
                }
            )
        return tiers

    def has_changed(self, initial: Any, data: Any) -> bool:
        """0.1 typed over a stored 0.10 is no change."""
        try:
            typed = self.to_python(data)
        except ValidationError:
            return True
        return [_tier_cells(tier) for tier in initial or []] != [_tier_cells(tier) for tier in typed]


class MetadataField(forms.CharField):
    """Metadata typed as text, one `key = value` per line, within the API's limits (METADATA_SCHEMA).

    The API takes any key and value those lines cannot write (an `=` in a key, a line break or
    leading spaces in a value): such metadata is shown, and may be typed, as a JSON object instead,
    so that saving the page never rewrites what the API stored."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60, "placeholder": "crm_id = A-1042"})
    max_keys = METADATA_SCHEMA["maxProperties"]
    max_key_length = METADATA_SCHEMA["propertyNames"]["maxLength"]
    max_value_length = METADATA_SCHEMA["additionalProperties"]["maxLength"]

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text",
            f"Your own key-value pairs, one per line: key = value (or a JSON object). At most "
            f"{self.max_keys} keys of 1 to {self.max_key_length} characters, each value at most "
            f"{self.max_value_length}.",
        )
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> str:
        if not isinstance(value, dict):
            return value or ""
        if all(_as_line(key, "=") and _as_line(text) for key, text in value.items()):
            # by key: PostgreSQL's jsonb keeps no order
            return "\n".join(f"{key} = {text}" for key, text in sorted(value.items()))
        return json.dumps(dict(sorted(value.items())), ensure_ascii=False, indent=2)

    def to_python(self, value: Any) -> dict[str, str]:
        text = super().to_python(value)
        pairs = self._from_json(text) if text.startswith("{") else self._from_lines(text)
        for key, item in pairs.items():
            if not 1 <= len(key) <= self.max_key_length:
                message = f"'{key[:50]}': a key has 1 to {self.max_key_length} characters."
                raise ValidationError(message, code="invalid_metadata")
            if len(item) > self.max_value_length:
                message = f"'{key}': a value has at most {self.max_value_length} characters."
                raise ValidationError(message, code="invalid_metadata")
        if len(pairs) > self.max_keys:
            raise ValidationError(f"At most {self.max_keys} keys.", code="invalid_metadata")
        return pairs

    @staticmethod
    def _from_json(text: str) -> dict[str, str]:
        try:
            pairs = json.loads(text)
        except ValueError:
            raise ValidationError("Not a JSON object.", code="invalid_metadata") from None
        if not isinstance(pairs, dict) or not all(isinstance(item, str) for item in pairs.values()):
            raise ValidationError("A JSON object of text values.", code="invalid_metadata")
        return pairs

    @staticmethod
    def _from_lines(text: str) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            key, equals, item = (part.strip() for part in line.partition("="))
            if not equals or not key:
                raise ValidationError(f"Line {number}: write 'key = value'.", code="invalid_metadata")
            if key in pairs:
                raise ValidationError(f"Line {number}: '{key}' is already given.", code="invalid_metadata")
            pairs[key] = item
        return pairs


def _as_line(text: Any, *forbidden: str) -> bool:
    """Whether `key = value` lines write `text` back exactly."""
    return (
        isinstance(text, str)
        and text == text.strip()
        and "\n" not in text
        and "\r" not in text
        and not any(sign in text for sign in forbidden)
    )


class EmailListField(forms.CharField):
    """A list of email addresses typed as text: separated by commas or one per line."""

    widget = forms.Textarea(attrs={"rows": 2, "cols": 60})
    default_validators = [validate_email_list]

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> str:
        return ", ".join(value) if isinstance(value, list) else value or ""

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        return [address.strip() for address in text.replace("\n", ",").split(",") if address.strip()]


def field_of(param: str | None) -> str | None:
    """`charges[2].tiers[1].up_to` → the form field it belongs to (`tiers`)."""
    if not param:
        return None
    return param.split(".")[-1].split("[")[0] if "tiers" not in param else "tiers"


class PricedItemForm(forms.ModelForm):
    """A charge or contract line, validated by catalog.pricing.clean_pricing like the API does."""

    tiers = TiersField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "amount_property" in self.fields:  # blank means the default, as in the API
            self.fields["amount_property"].required = False

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        item = {name: cleaned.get(name) for name in PRICING_FIELDS if name in cleaned}
        if item.get("pricing_model") == PricingModel.GRADUATED_PERCENTAGE and item.get("tiers"):
            # The table's price column holds a graduated_percentage tier's rate.
            item["tiers"] = [
                {"up_to": tier["up_to"], "rate": tier["unit_price"], "flat_fee": tier["flat_fee"]}
                for tier in item["tiers"]
            ]
        try:
            normalized = clean_pricing(item)
        except DomainError as exc:
            field = field_of(exc.param)
            error = ValidationError(exc.message, code=exc.code)
            raise ValidationError({field if field in self.fields else None: error}) from None
        cleaned.update({name: normalized[name] for name in item})
        return cleaned


def _country_choices() -> list[tuple[str, str]]:
    """The codes the API accepts (ISO 3166 alpha-2), by their English names."""
    names = Locale("en").territories
    return [
        ("", "---------"),
        *sorted(((code, f"{names[code]} ({code})") for code in countries()), key=lambda c: c[1]),
    ]


class CustomerForm(SameProjectForm):
    """The billing address as a field per part (`address_line1`, …, the API's keys and limits),
    packed back into the `billing_address` dict the service takes."""

    address_line1 = forms.CharField(label="Line 1", max_length=200, required=False)
    address_line2 = forms.CharField(label="Line 2", max_length=200, required=False)
    address_city = forms.CharField(label="City", max_length=200, required=False)
    address_postal_code = forms.CharField(label="Postal code", max_length=20, required=False)
    address_state = forms.CharField(label="State or region", max_length=200, required=False)
    address_country = forms.ChoiceField(label="Country", choices=_country_choices, required=False)

    class Meta:
        model = Customer
        exclude = ["billing_address"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for part, value in (self.instance.billing_address or {}).items():
            self.initial.setdefault(f"address_{part}", value)

    @cached_property
    def changed_data(self) -> list[str]:
        """The address parts changed are one change, of billing_address."""
        changed = super().changed_data
        parts = [f"address_{part}" for part in ADDRESS_FIELDS]
        address = ["billing_address"] if set(parts) & set(changed) else []
        return [*(name for name in changed if name not in parts), *address]

    def clean(self):
        cleaned = super().clean()
        parts = {part: cleaned.pop(f"address_{part}", "") for part in ADDRESS_FIELDS}
        cleaned["billing_address"] = {part: value for part, value in parts.items() if value}
        return cleaned


@dataclass(frozen=True)
class _Download:
    url: str
    name: str

    def __str__(self) -> str:
        return self.name


class DocumentInput(forms.ClearableFileInput):
    """A file input whose "Currently" link is the admin's download view (`download_url`): media is
    not served publicly."""

    download_url = ""

    def format_value(self, value: Any) -> Any:
        if self.download_url and self.is_initial(value):
            return _Download(url=self.download_url, name=posixpath.basename(value.name))
        return super().format_value(value)


class ContractForm(forms.ModelForm):
    class Meta:
        model = Contract
        fields = [
            "project",
            "title",
            "document",
            "customer",
            "customer_name",
            "customer_email",
            "customer_external_id",
            "currency",
            "interval",
            "interval_count",
            "billing_anchor",
            "start_date",
            "payment_terms_days",
            "notes",
        ]
        widgets = {"document": DocumentInput}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and "document" in self.fields:
            url = reverse("admin:catalog_contract_document", args=[self.instance.pk])
            self.fields["document"].widget.download_url = url

    def clean_document(self):
        document = self.cleaned_data.get("document")
        if document is None or not hasattr(document, "read"):
            return document
        if document.size > MAX_CONTRACT_BYTES:
            raise ValidationError(
                f"The document is larger than {MAX_CONTRACT_BYTES // (1024 * 1024)} MB.",
                code="file_too_large",
            )
        head = document.read(5)
        document.seek(0)
        if head != b"%PDF-":
            raise ValidationError("The document must be a PDF.", code="not_a_pdf")
        return document

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("customer") and not cleaned.get("customer_name"):
            raise ValidationError(
                "Choose an existing customer or give the new customer's name.", code="counterparty_required"
            )
        return cleaned
