from decimal import Decimal

from django.conf import settings
from django.core.validators import FileExtensionValidator, MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from accounts.models import InvoiceDelivery, Project
from billing_site.ids import PublicIdField
from billing_site.validators import (
    validate_currency,
    validate_email_address,
    validate_email_list,
    validate_locale,
    validate_timezone,
)
from catalog.pricing import PERCENTAGE_PLACES, PRICE_DIGITS, PRICE_PLACES, FeeTiming, PricedItem
from meters.models import code_validator

# Bounds on a plan's cadence and trial (Stripe's are similar): beyond them, period arithmetic would
# leave the supported date range (billing_site.moments) for no plan anyone sells.
MAX_INTERVAL_COUNT = 365
MAX_TRIAL_DAYS = 730


class Interval(models.TextChoices):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class BillingAnchor(models.TextChoices):
    CALENDAR = "calendar", "Calendar (1st of the month, Monday, 1 January)"
    ANNIVERSARY = "anniversary", "Anniversary of the start"


class Product(models.Model):
    """What is sold. Plans price it."""

    public_id = PublicIdField(prefix="prod")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    code = models.CharField(max_length=100, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "code"], name="product_code_unique")]

    def __str__(self) -> str:
        return self.name


class TaxRate(models.Model):
    """A tax charged on invoices: a percentage of the discounted amount of each line it applies to.

    Rates are set on the project (`is_default`), a customer, a plan or a charge; the most specific
    wins for each line (charge, then plan, then customer, then the project's defaults): see
    invoicing/taxes.py. `inclusive` rates are already in the prices (the tax is the part of the
    line that is tax); exclusive ones are added on top. Never edited once used: archive it and
    make another (an issued invoice keeps its rate's name and percentage on its lines).
    """

    public_id = PublicIdField(prefix="txr")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=100, help_text='Shown on invoices, e.g. "VAT" or "Sales tax".')
    percentage = models.DecimalField(max_digits=9, decimal_places=PERCENTAGE_PLACES)
    inclusive = models.BooleanField(default=False, help_text="Prices already include this tax.")
    jurisdiction = models.CharField(max_length=100, blank=True, help_text='e.g. "FR", "US-CA".')
    is_default = models.BooleanField(
        default=False, help_text="Applies to every invoice of the project unless a more specific rate is set."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        label = f"{self.name} {self.percentage.normalize():f} %"
        return f"{label} incl." if self.inclusive else label


class Plan(models.Model):
    """One version of a plan: cadence, base fee and charges.

    A version that a subscription uses is never repriced in place: a price change creates the next
    version (same `code`, `version` + 1, `previous_version` set) and existing subscriptions keep
    theirs until moved. Private plans come from contracts and per-subscription price overrides and
    are hidden from plan lists by default.
    """

    public_id = PublicIdField(prefix="plan")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="plans")
    code = models.CharField(max_length=100, validators=[code_validator])
    version = models.PositiveIntegerField(default=1)
    previous_version = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="next_version"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    currency = models.CharField(max_length=3, validators=[validate_currency])
    interval = models.CharField(max_length=10, choices=Interval.choices, default=Interval.MONTH)
    interval_count = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_INTERVAL_COUNT)]
    )
    trial_days = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(MAX_TRIAL_DAYS)])
    bill_usage_during_trial = models.BooleanField(
        default=True, help_text="Usage during a trial is billed unless this is off."
    )
    base_fee = models.DecimalField(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES, default=Decimal(0))
    base_fee_timing = models.CharField(max_length=10, choices=FeeTiming.choices, default=FeeTiming.IN_ADVANCE)
    entitlements = models.JSONField(
        default=dict, blank=True, help_text='Feature flags and quotas, e.g. {"sso": true, "seats": 10}.'
    )
    minimum_commitment = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        default=Decimal(0),
        help_text="The least a period bills in fees and usage; a true-up line makes up any shortfall.",
    )
    tax_rates = models.ManyToManyField(TaxRate, blank=True, related_name="+")
    is_private = models.BooleanField(default=False, help_text="Made for one customer (contract or override).")
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["code", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "code", "version"], name="plan_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}" if self.version > 1 else self.name


class Charge(PricedItem):
    """One priced item of a plan: a meter's usage, or a fixed fee. Never edited once the plan is
    in use (the plan gets a new version instead)."""

    public_id = PublicIdField(prefix="chg")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="charges")
    position = models.PositiveIntegerField(default=0)
    tax_rates = models.ManyToManyField(TaxRate, blank=True, related_name="+")

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name or (self.meter.name if self.meter_id else "Fixed fee")


class TaxStatus(models.TextChoices):
    TAXABLE = "taxable", "Taxable"
    EXEMPT = "exempt", "Tax-exempt"
    REVERSE_CHARGE = "reverse_charge", "Reverse charge (the customer accounts for the tax)"


class Customer(models.Model):
    """Who gets billed. Usage events name the customer by `external_id` (the company's own ID;
    it defaults to the public ID, so events may also name a customer by `cus_…`)."""

    public_id = PublicIdField(prefix="cus")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    external_id = models.CharField(max_length=255)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True, validators=[validate_email_address])
    billing_address = models.JSONField(default=dict, blank=True)
    tax_id = models.CharField(max_length=100, blank=True)
    tax_status = models.CharField(max_length=16, choices=TaxStatus.choices, default=TaxStatus.TAXABLE)
    tax_rates = models.ManyToManyField(
        TaxRate, blank=True, related_name="+", help_text="Override the project's default rates."
    )
    currency = models.CharField(max_length=3, validators=[validate_currency])
    timezone = models.CharField(max_length=64, validators=[validate_timezone])
    processor_customer_id = models.CharField(max_length=255, blank=True)
    locale = models.CharField(
        max_length=20,
        blank=True,
        validators=[validate_locale],
        help_text="How their invoices format money and dates; blank: the project's locale.",
    )
    invoice_emails = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_email_list],
        help_text="Where invoices are emailed; empty: the customer's email.",
    )
    invoice_cc = models.JSONField(
        default=list, blank=True, validators=[validate_email_list], help_text="Copied on invoice emails."
    )
    invoice_delivery = models.CharField(
        max_length=10, choices=InvoiceDelivery.choices, blank=True, help_text="Blank: the project's setting."
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="customer_external_id_unique")
        ]
        indexes = [
            models.Index(fields=["project", "email"], name="customer_email"),
            # Usage events may name the customer by it (stripeCustomerId): meters.matching.
            models.Index(fields=["project", "processor_customer_id"], name="customer_processor_id"),
        ]

    def __str__(self) -> str:
        return self.name or self.email or self.external_id


class ContractStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACCEPTED = "accepted", "Accepted"


MAX_CONTRACT_BYTES = 20 * 1024 * 1024


class Contract(models.Model):
    """A signed deal entered by ops staff. Accepting it creates (or links) the customer, a private
    plan from its lines, and the subscription, in one transaction; it is read-only afterwards."""

    public_id = PublicIdField(prefix="ctr")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    title = models.CharField(max_length=200)
    document = models.FileField(
        upload_to="contracts/%Y/%m/",
        validators=[FileExtensionValidator(["pdf"])],
        help_text=f"The signed contract, a PDF of at most {MAX_CONTRACT_BYTES // (1024 * 1024)} MB.",
    )
    status = models.CharField(max_length=10, choices=ContractStatus.choices, default=ContractStatus.DRAFT)

    customer = models.ForeignKey(
        Customer,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="contracts",
        help_text="An existing customer; leave empty to create one from the fields below.",
    )
    customer_name = models.CharField(max_length=200, blank=True)
    customer_email = models.EmailField(blank=True)
    customer_external_id = models.CharField(max_length=255, blank=True)

    currency = models.CharField(max_length=3, validators=[validate_currency])
    interval = models.CharField(max_length=10, choices=Interval.choices, default=Interval.MONTH)
    interval_count = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_INTERVAL_COUNT)]
    )
    billing_anchor = models.CharField(
        max_length=12, choices=BillingAnchor.choices, default=BillingAnchor.CALENDAR
    )
    start_date = models.DateField()
    payment_terms_days = models.PositiveIntegerField(default=30)
    notes = models.TextField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    plan = models.OneToOneField(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="contract"
    )
    subscription = models.OneToOneField(
        "subscriptions.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="contract"
    )

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.title


class ContractLine(PricedItem):
    """A line of a contract: a fixed fee or usage priced like a charge (it becomes one)."""

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name or "Line"


class CouponKind(models.TextChoices):
    PERCENTAGE = "percentage", "Percentage off"
    FIXED_AMOUNT = "fixed_amount", "Fixed amount off"


class CouponDuration(models.TextChoices):
    ONCE = "once", "Once (the first invoice)"
    REPEATING = "repeating", "Repeating (a number of periods)"
    FOREVER = "forever", "Forever"


class Coupon(models.Model):
    """A discount: a percentage or a fixed amount (per currency) off the lines it applies to.

    `plans`/`charges` limit it (empty: every fee and usage line). It is redeemed for a customer
    (every subscription) or one subscription; `duration` says for how many of their invoices.
    """

    public_id = PublicIdField(prefix="cpn")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    code = models.CharField(max_length=100, validators=[code_validator])
    name = models.CharField(max_length=200, help_text="Shown on the discount line.")
    kind = models.CharField(max_length=12, choices=CouponKind.choices)
    percent_off = models.DecimalField(max_digits=9, decimal_places=PERCENTAGE_PLACES, null=True, blank=True)
    # Fixed amounts per currency: {"USD": "10.00", "EUR": "9.00"}; a currency not listed gets none.
    amount_off = models.JSONField(default=dict, blank=True)
    duration = models.CharField(max_length=10, choices=CouponDuration.choices, default=CouponDuration.ONCE)
    duration_periods = models.PositiveIntegerField(null=True, blank=True, help_text="Repeating: how many.")
    plans = models.ManyToManyField(Plan, blank=True, related_name="+")
    charges = models.ManyToManyField(Charge, blank=True, related_name="+")
    max_redemptions = models.PositiveIntegerField(null=True, blank=True)
    redeem_by = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["project", "code"], name="coupon_code_unique")]

    def __str__(self) -> str:
        return self.name or self.code


class CouponRedemption(models.Model):
    """A coupon applied to a customer (all their subscriptions, `subscription` empty) or to one
    subscription. Which invoices it discounted is on their discount lines; `removed_at` ends it."""

    public_id = PublicIdField(prefix="cpr")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    coupon = models.ForeignKey(Coupon, on_delete=models.PROTECT, related_name="redemptions")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="coupon_redemptions")
    subscription = models.ForeignKey(
        "subscriptions.Subscription",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="coupon_redemptions",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # A coupon applies once to the same customer or subscription at a time.
            models.UniqueConstraint(
                fields=["coupon", "customer"],
                condition=Q(subscription__isnull=True, removed_at__isnull=True),
                name="coupon_once_per_customer",
            ),
            models.UniqueConstraint(
                fields=["coupon", "subscription"],
                condition=Q(subscription__isnull=False, removed_at__isnull=True),
                name="coupon_once_per_subscription",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.coupon} for {self.customer}"
