"""How a charge is priced: the fields every priced item shares, and their validation.

Plan charges and contract lines are both "priced items"; they share one set of columns (an
abstract model) and one validator, so a contract line becomes a charge by copying fields.

Tiers are a list of {"up_to", "unit_price", "flat_fee"} with decimal strings ({"up_to", "rate",
"flat_fee"} for graduated_percentage, `rate` a percentage). `up_to` is inclusive (`up_to: 1000`
covers unit 1000; the next tier starts right after), strictly ascending, and only the last tier is
open-ended (`up_to: null`), so tiers are contiguous by construction. A tiered charge with an
`overage_unit_price` ends instead with a bounded tier: units beyond it cost the overage price.
"""

from decimal import Decimal
from typing import Any

from django.db import models

from billing_site.errors import InvalidInput, Unprocessable
from billing_site.money import DecimalError, decimal_from_json, decimal_string

PRICE_DIGITS = 28
PRICE_PLACES = 12
PERCENTAGE_PLACES = 6
MAX_PERCENTAGE = Decimal(100)


class ChargeKind(models.TextChoices):
    USAGE = "usage", "Usage-based"
    FIXED = "fixed", "Fixed fee"


class PricingModel(models.TextChoices):
    PER_UNIT = "per_unit", "Per unit"
    GRADUATED = "graduated", "Graduated tiers"
    VOLUME = "volume", "Volume tiers"
    PACKAGE = "package", "Package"
    STAIRSTEP = "stairstep", "Stairstep"
    PERCENTAGE = "percentage", "Percentage"
    GRADUATED_PERCENTAGE = "graduated_percentage", "Graduated percentage"
    DYNAMIC = "dynamic", "Dynamic (amount sent with each event)"


TIERED_MODELS = frozenset({PricingModel.GRADUATED, PricingModel.VOLUME, PricingModel.STAIRSTEP})
# The models priced from a tier table (graduated_percentage's tiers carry a rate, not a unit price).
TIER_TABLE_MODELS = TIERED_MODELS | {PricingModel.GRADUATED_PERCENTAGE}
DEFAULT_AMOUNT_PROPERTY = "amount"
PROPERTY_MAX_LENGTH = 100


class FeeTiming(models.TextChoices):
    IN_ADVANCE = "in_advance", "In advance"
    IN_ARREARS = "in_arrears", "In arrears"


class PackageRounding(models.TextChoices):
    UP = "up", "Round partial packages up"
    DOWN = "down", "Round partial packages down"


def _price_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES, **kwargs)


class PricedItem(models.Model):
    """The pricing columns shared by plan charges and contract lines.

    - fixed: `unit_price` per period, billed in advance or in arrears (`timing`), prorated by time.
    - usage, per meter, always in arrears:
      per_unit (quantity × unit_price), graduated / volume / stairstep (`tiers`),
      package (`unit_price` per `package_size` units, partial packages rounded up or down),
      percentage (`percentage_rate` % of the summed value, plus `fixed_fee_per_event`, each event's
      fee clamped to `min_fee_per_event`/`max_fee_per_event`; the first `free_amount` of summed
      value carries no percentage fee),
      graduated_percentage (`tiers` of the summed value, each with a percentage `rate` and a flat fee),
      dynamic (the sum of each event's `amount_property`).
    - tiered: `overage_unit_price` prices units beyond a bounded last tier; `bill_flat_fee_at_zero`
      bills tier 1's flat fee when nothing is billable.
    - fixed: `prorate` False bills a partial period in full.
    - any usage charge: the first `free_units` are free; the charge is at least `minimum_amount`.
    """

    kind = models.CharField(max_length=10, choices=ChargeKind.choices, default=ChargeKind.USAGE)
    name = models.CharField(max_length=200, blank=True, help_text="Shown on invoice lines.")
    meter = models.ForeignKey(
        "meters.Meter", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    pricing_model = models.CharField(
        max_length=20, choices=PricingModel.choices, default=PricingModel.PER_UNIT
    )
    unit_price = _price_field(default=Decimal(0), help_text="Per unit; per package; or the fixed fee.")
    package_size = _price_field(null=True, blank=True)
    package_rounding = models.CharField(
        max_length=4, choices=PackageRounding.choices, default=PackageRounding.UP
    )
    percentage_rate = models.DecimalField(
        max_digits=9, decimal_places=PERCENTAGE_PLACES, null=True, blank=True
    )
    fixed_fee_per_event = _price_field(null=True, blank=True)
    min_fee_per_event = _price_field(null=True, blank=True)
    max_fee_per_event = _price_field(null=True, blank=True)
    free_units = _price_field(default=Decimal(0))
    minimum_amount = _price_field(default=Decimal(0))
    tiers = models.JSONField(default=list, blank=True)
    timing = models.CharField(max_length=10, choices=FeeTiming.choices, default=FeeTiming.IN_ARREARS)
    prorate = models.BooleanField(
        default=True, help_text="Fixed fees: prorate a partial period by time (otherwise bill it in full)."
    )
    free_amount = _price_field(
        null=True, blank=True, help_text="Percentage: the first this much of summed value pays no rate."
    )
    amount_property = models.CharField(
        max_length=PROPERTY_MAX_LENGTH,
        default=DEFAULT_AMOUNT_PROPERTY,
        help_text="Dynamic: the event property holding each event's amount.",
    )
    overage_unit_price = _price_field(
        null=True, blank=True, help_text="Tiered: per unit beyond a bounded last tier."
    )
    bill_flat_fee_at_zero = models.BooleanField(
        default=False, help_text="Tiered: bill tier 1's flat fee even when no unit is billable."
    )

    class Meta:
        abstract = True


PRICING_FIELDS = [
    "kind",
    "name",
    "meter",
    "pricing_model",
    "unit_price",
    "package_size",
    "package_rounding",
    "percentage_rate",
    "fixed_fee_per_event",
    "min_fee_per_event",
    "max_fee_per_event",
    "free_units",
    "minimum_amount",
    "tiers",
    "timing",
    "prorate",
    "free_amount",
    "amount_property",
    "overage_unit_price",
    "bill_flat_fee_at_zero",
]


def to_decimal(
    value: Any, *, param: str, allow_none: bool = False, places: int = PRICE_PLACES, signed: bool = True
) -> Decimal | None:
    """A JSON number or decimal string as an exact Decimal (billing_site.money.decimal_from_json)."""
    if value is None or value == "":
        if allow_none:
            return None
        raise InvalidInput("A number is required.", code="required", param=param)
    try:
        return decimal_from_json(
            value, integer_digits=PRICE_DIGITS - PRICE_PLACES, places=places, signed=signed
        )
    except DecimalError as error:
        raise InvalidInput(error.message, code=error.code, param=param) from None


def _non_negative(value: Decimal | None, *, param: str) -> None:
    if value is not None and value < 0:
        raise InvalidInput("Must not be negative.", code="negative_amount", param=param)


def clean_tiers(
    raw: Any, *, param: str = "tiers", percentage: bool = False, bounded: bool = False
) -> list[dict[str, str | None]]:
    """Validate a tier table. `percentage`: tiers carry a `rate` (0 to 100) instead of a unit price.
    `bounded`: the last tier may (and must) have a numeric `up_to` (an overage price follows it)."""
    if not isinstance(raw, list) or not raw:
        raise Unprocessable("This pricing model needs at least one tier.", code="tiers_required", param=param)
    price_key = "rate" if percentage else "unit_price"
    cleaned: list[dict[str, str | None]] = []
    previous: Decimal | None = Decimal(0)
    for index, tier in enumerate(raw):
        at = f"{param}[{index}]"
        if not isinstance(tier, dict):
            raise InvalidInput("Each tier is an object.", code="invalid_tier", param=at)
        unknown = set(tier) - {"up_to", price_key, "flat_fee"}
        if unknown:
            raise InvalidInput(
                f"Unknown tier field(s): {', '.join(sorted(unknown))}.", code="unknown_field", param=at
            )
        if previous is None:
            raise Unprocessable(
                "Only the last tier may be open-ended (up_to: null); tiers must be contiguous.",
                code="tiers_not_contiguous",
                param=f"{param}[{index - 1}].up_to",
            )
        up_to = to_decimal(tier.get("up_to"), param=f"{at}.up_to", allow_none=True)
        if up_to is not None and up_to <= previous:
            raise Unprocessable(
                "Tier bounds must be strictly ascending and above zero.",
                code="tiers_not_ascending",
                param=f"{at}.up_to",
            )
        places = PERCENTAGE_PLACES if percentage else PRICE_PLACES
        price = to_decimal(tier.get(price_key, 0), param=f"{at}.{price_key}", places=places)
        flat_fee = to_decimal(tier.get("flat_fee", 0), param=f"{at}.flat_fee")
        _non_negative(price, param=f"{at}.{price_key}")
        _non_negative(flat_fee, param=f"{at}.flat_fee")
        if percentage and price is not None and price > MAX_PERCENTAGE:
            raise Unprocessable(
                "A tier's rate must be between 0 and 100.",
                code="percentage_out_of_range",
                param=f"{at}.rate",
            )
        cleaned.append(
            {
                "up_to": decimal_string(up_to),
                price_key: decimal_string(price),
                "flat_fee": decimal_string(flat_fee),
            }
        )
        previous = up_to
    if previous is not None and not bounded:
        raise Unprocessable(
            "The last tier must be open-ended (up_to: null), unless the charge has an overage_unit_price.",
            code="last_tier_not_open_ended",
            param=f"{param}[{len(raw) - 1}].up_to",
        )
    if previous is None and bounded:
        raise Unprocessable(
            "An overage_unit_price prices units beyond a bounded last tier; this last tier is open-ended.",
            code="last_tier_open_ended",
            param=f"{param}[{len(raw) - 1}].up_to",
        )
    return cleaned


def clean_pricing(item: dict[str, Any], *, param: str = "") -> dict[str, Any]:
    """Validate one priced item (field name → value) and return it normalised.

    Raises InvalidInput with a precise code and the field's path (`charges[2].tiers[1].up_to`).
    `meter` must already be resolved to a Meter (or None) by the caller.
    """

    def at(name: str) -> str:
        return f"{param}.{name}" if param else name

    kind = item.get("kind") or ChargeKind.USAGE
    model = item.get("pricing_model") or PricingModel.PER_UNIT
    cleaned = {
        "name": "",
        "package_rounding": PackageRounding.UP,
        "timing": FeeTiming.IN_ARREARS,
        "prorate": True,
        "bill_flat_fee_at_zero": False,
        **item,
        "kind": kind,
        "pricing_model": model,
    }
    if kind not in ChargeKind.values:
        raise InvalidInput(f"Unknown kind {kind!r}.", code="invalid_choice", param=at("kind"))
    if model not in PricingModel.values:
        raise InvalidInput(
            f"Unknown pricing model {model!r}.", code="invalid_pricing_model", param=at("pricing_model")
        )

    for name in ("unit_price", "free_units", "minimum_amount"):
        cleaned[name] = to_decimal(item.get(name, 0), param=at(name))
        _non_negative(cleaned[name], param=at(name))
    for name in (
        "package_size",
        "percentage_rate",
        "fixed_fee_per_event",
        "min_fee_per_event",
        "max_fee_per_event",
        "free_amount",
        "overage_unit_price",
    ):
        places = PERCENTAGE_PLACES if name == "percentage_rate" else PRICE_PLACES
        cleaned[name] = to_decimal(item.get(name), param=at(name), allow_none=True, places=places)
        _non_negative(cleaned[name], param=at(name))

    for name in ("prorate", "bill_flat_fee_at_zero"):
        if not isinstance(cleaned[name], bool):
            raise InvalidInput("Must be true or false.", code="invalid_boolean", param=at(name))
    amount_property = item.get("amount_property")
    if amount_property is None or amount_property == "":
        amount_property = DEFAULT_AMOUNT_PROPERTY
    if not isinstance(amount_property, str) or len(amount_property) > PROPERTY_MAX_LENGTH:
        raise InvalidInput(
            f"A property name is a string of at most {PROPERTY_MAX_LENGTH} characters.",
            code="invalid_property",
            param=at("amount_property"),
        )
    cleaned["amount_property"] = amount_property

    if kind == ChargeKind.FIXED:
        if item.get("meter") is not None:
            raise Unprocessable("A fixed fee has no meter.", code="meter_not_allowed", param=at("meter"))
        cleaned.update(pricing_model=PricingModel.PER_UNIT, tiers=[])
        return cleaned

    if item.get("meter") is None:
        raise Unprocessable("A usage charge needs a meter.", code="meter_required", param=at("meter"))
    cleaned["timing"] = FeeTiming.IN_ARREARS  # usage is only known once the period is over
    _check_option_fits_model(cleaned, model, at)
    if model in TIER_TABLE_MODELS:
        cleaned["tiers"] = clean_tiers(
            item.get("tiers"),
            param=at("tiers"),
            percentage=model == PricingModel.GRADUATED_PERCENTAGE,
            bounded=cleaned["overage_unit_price"] is not None,
        )
    elif item.get("tiers"):
        raise Unprocessable(f"{model} pricing takes no tiers.", code="tiers_not_allowed", param=at("tiers"))
    else:
        cleaned["tiers"] = []
    if model == PricingModel.PACKAGE and (cleaned["package_size"] is None or cleaned["package_size"] <= 0):
        raise Unprocessable(
            "A package size must be a positive number of units.",
            code="package_size_not_positive",
            param=at("package_size"),
        )
    if model == PricingModel.PERCENTAGE:
        rate = cleaned["percentage_rate"]
        if rate is None or not 0 <= rate <= MAX_PERCENTAGE:
            raise Unprocessable(
                "A percentage rate must be between 0 and 100.",
                code="percentage_out_of_range",
                param=at("percentage_rate"),
            )
        if cleaned["free_units"] != cleaned["free_units"].to_integral_value():
            raise Unprocessable(
                "For percentage pricing, free units are a whole number of free events.",
                code="free_units_not_integer",
                param=at("free_units"),
            )
        low, high = cleaned["min_fee_per_event"], cleaned["max_fee_per_event"]
        if low is not None and high is not None and low > high:
            raise Unprocessable(
                "The per-event minimum exceeds the maximum.",
                code="min_above_max",
                param=at("min_fee_per_event"),
            )
    return cleaned


def _check_option_fits_model(cleaned: dict[str, Any], model: str, at) -> None:
    """The options that only mean something under some pricing models are refused elsewhere (422),
    so a charge never carries a setting that silently does nothing."""
    if cleaned["free_amount"] is not None and model != PricingModel.PERCENTAGE:
        raise Unprocessable(
            "A free amount applies to percentage pricing only.",
            code="free_amount_not_allowed",
            param=at("free_amount"),
        )
    if cleaned["overage_unit_price"] is not None and model not in TIERED_MODELS:
        raise Unprocessable(
            "An overage unit price applies to graduated, volume and stairstep pricing only.",
            code="overage_not_allowed",
            param=at("overage_unit_price"),
        )
    if cleaned["bill_flat_fee_at_zero"] and model not in TIER_TABLE_MODELS:
        raise Unprocessable(
            "Billing the first tier's flat fee at zero usage applies to tiered pricing only.",
            code="flat_fee_at_zero_not_allowed",
            param=at("bill_flat_fee_at_zero"),
        )
    if model == PricingModel.DYNAMIC and cleaned["free_units"]:
        raise Unprocessable(
            "Dynamic pricing bills the events' own amounts; it has no free units.",
            code="free_units_not_allowed",
            param=at("free_units"),
        )
