"""Admin forms for priced items, contracts and customers: the same validation as the API, shown on
the field."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from billing_site.errors import DomainError
from billing_site.money import decimal_string
from billing_site.validators import validate_email_list
from catalog.models import MAX_CONTRACT_BYTES, Contract
from catalog.pricing import PRICING_FIELDS, PricingModel, clean_pricing

OPEN_ENDED = {"*", "∞", "inf", ""}


class TiersField(forms.CharField):
    """Tiers as a small text table a finance person can read and type:

        1000 | 0     | 0
        5000 | 0.002 | 0
        *    | 0.001 | 5

    one tier per line: up to (inclusive) | unit price | flat fee; `*` for the open-ended last tier.
    """

    widget = forms.Textarea(attrs={"rows": 4, "cols": 40, "placeholder": "1000 | 0.01 | 0\n* | 0.005 | 0"})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text",
            "Graduated, volume, stairstep and graduated percentage only. One tier per line: "
            "up to (inclusive) | unit price (graduated percentage: rate in %) | flat fee; * as the last "
            "tier's 'up to' (a number with an overage unit price). Stairstep charges each tier's flat fee.",
        )
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> str:
        if not isinstance(value, list):
            return value or ""
        lines = []
        for tier in value:
            up_to = "*" if tier.get("up_to") is None else decimal_string(tier["up_to"])
            price = tier["rate"] if "rate" in tier else tier["unit_price"]
            lines.append(f"{up_to} | {decimal_string(price)} | {decimal_string(tier['flat_fee'])}")
        return "\n".join(lines)

    def to_python(self, value: Any) -> list[dict[str, str | None]]:
        tiers = []
        for number, line in enumerate((value or "").strip().splitlines(), start=1):
            if not line.strip():
                continue
            cells = [cell.strip() for cell in line.split("|")]
            if len(cells) not in (2, 3):
                raise ValidationError(
                    f"Line {number}: write 'up to | unit price | flat fee'.", code="invalid_tier"
                )
            up_to, unit_price, flat_fee = (*cells, "0")[:3]
            tiers.append(
                {
                    "up_to": None if up_to.lower() in OPEN_ENDED else up_to,
                    "unit_price": unit_price,
                    "flat_fee": flat_fee,
                }
            )
        return tiers


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
