from datetime import datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import IntegrityError, models, transaction
from django.db.models import Max, ProtectedError
from django.utils import timezone

from accounts.models import ApiKey, InvoiceDelivery, Project
from accounts.services import Actor, audit_record
from billing_site.errors import Conflict, InvalidInput, InvalidState, Unprocessable
from billing_site.validators import (
    check,
    countries,
    validate_currency,
    validate_email_address,
    validate_email_list,
    validate_locale,
    validate_timezone,
)
from catalog.models import (
    MAX_INTERVAL_COUNT,
    MAX_TRIAL_DAYS,
    Charge,
    Contract,
    ContractStatus,
    Customer,
    Interval,
    Plan,
    Product,
    TaxStatus,
)
from catalog.pricing import PRICING_FIELDS, FeeTiming, clean_pricing, to_decimal
from catalog.selectors import plan_in_use
from catalog.taxes import tax_rates_resolve
from meters.models import Meter
from meters.services import usage_rematch_enqueue
from meters.staleness import drafts_stale_after_commit
from webhooks.services import event_record

ADDRESS_FIELDS = ("line1", "line2", "city", "state", "postal_code", "country")
# Plan fields that change what existing subscriptions pay; the rest can change in place.
PLAN_PRICING_FIELDS = frozenset(
    {
        "currency",
        "interval",
        "interval_count",
        "base_fee",
        "base_fee_timing",
        "bill_usage_during_trial",
        "minimum_commitment",
        "charges",
    }
)
# Tax rates change in place: a tax is the law's, not a price the subscription agreed to.
PLAN_FIELDS = (
    frozenset({"name", "description", "trial_days", "entitlements", "tax_rates"}) | PLAN_PRICING_FIELDS
)


def _changes(obj: models.Model, changes: dict[str, Any]) -> dict[str, list[str]]:
    """What really changes, old and new, against the row as stored (callers such as admin forms may
    already have applied the new values to `obj`)."""
    stored = type(obj).objects.get(pk=obj.pk)
    return {
        name: [str(getattr(stored, name)), str(value)]
        for name, value in changes.items()
        if getattr(stored, name) != value
    }


def _archive(obj: models.Model, *, actor: Actor, action: str) -> models.Model:
    with transaction.atomic():
        if type(obj).objects.filter(pk=obj.pk, archived_at__isnull=True).update(archived_at=timezone.now()):
            audit_record(project=obj.project, actor=actor, action=action, target=obj)
    obj.refresh_from_db(fields=["archived_at"])
    return obj


def _delete_unused(obj: models.Model, *, actor: Actor, action: str) -> None:
    """Delete an object nothing refers to; once used, it can only be archived."""
    try:
        with transaction.atomic():
            audit_record(project=obj.project, actor=actor, action=action, target=obj)
            obj.delete()
    except ProtectedError:
        name = obj._meta.verbose_name
        raise Conflict(
            f"This {name} is in use and cannot be deleted; archive it instead.", code="in_use"
        ) from None


# --- products -------------------------------------------------------------------------------------


def product_create(*, project: Project, code: str, name: str, description: str = "", actor: Actor) -> Product:
    try:
        with transaction.atomic():
            product = Product.objects.create(project=project, code=code, name=name, description=description)
            audit_record(project=project, actor=actor, action="product.created", target=product)
    except IntegrityError:
        raise Conflict(
            f"A product with code '{code}' already exists.", code="product_code_taken", param="code"
        ) from None
    return product


def product_update(*, product: Product, changes: dict[str, Any], actor: Actor) -> Product:
    try:
        with transaction.atomic():
            audit = _changes(product, changes)
            for name, value in changes.items():
                setattr(product, name, value)
            product.save()
            audit_record(
                project=product.project, actor=actor, action="product.updated", target=product, changes=audit
            )
    except IntegrityError:
        raise Conflict(
            "A product with this code already exists.", code="product_code_taken", param="code"
        ) from None
    return product


def product_archive(*, product: Product, actor: Actor) -> Product:
    return _archive(product, actor=actor, action="product.archived")


def product_delete(*, product: Product, actor: Actor) -> None:
    _delete_unused(product, actor=actor, action="product.deleted")


# --- plans ----------------------------------------------------------------------------------------


def _resolve_meter(project: Project, value: Any, *, param: str) -> Meter | None:
    if value is None or isinstance(value, Meter):
        return value
    meter = (
        Meter.objects.filter(project=project).filter(models.Q(code=value) | models.Q(public_id=value)).first()
    )
    if meter is None:
        raise Unprocessable(f"No meter '{value}' in this project.", code="unknown_meter", param=param)
    return meter


def clean_charges(
    project: Project, charges: list[dict[str, Any]], *, currency_param: str = "charges"
) -> list[dict]:
    cleaned = []
    for index, charge in enumerate(charges):
        at = f"{currency_param}[{index}]"
        unknown = set(charge) - {*PRICING_FIELDS, "tax_rates"}
        if unknown:
            raise InvalidInput(
                f"Unknown field(s): {', '.join(sorted(unknown))}.", code="unknown_field", param=at
            )
        item = {**charge, "meter": _resolve_meter(project, charge.get("meter"), param=f"{at}.meter")}
        rates = tax_rates_resolve(
            project=project, references=item.pop("tax_rates", None) or [], param=f"{at}.tax_rates"
        )
        cleaned.append({**clean_pricing(item, param=at), "tax_rates": rates})
    return cleaned


def _clean_plan_fields(project: Project, fields: dict[str, Any]) -> dict[str, Any]:
    cleaned = dict(fields)
    if "currency" in fields:
        check(validate_currency, fields["currency"], param="currency")
    if "interval" in fields and fields["interval"] not in Interval.values:
        raise InvalidInput(
            f"Interval must be one of {', '.join(Interval.values)}.",
            code="invalid_interval",
            param="interval",
        )
    count = fields.get("interval_count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_INTERVAL_COUNT:
        raise InvalidInput(
            f"interval_count is a whole number from 1 to {MAX_INTERVAL_COUNT}.",
            code="invalid_interval",
            param="interval_count",
        )
    trial_days = fields.get("trial_days", 0)
    if (
        isinstance(trial_days, bool)
        or not isinstance(trial_days, int)
        or not 0 <= trial_days <= MAX_TRIAL_DAYS
    ):
        raise InvalidInput(
            f"trial_days is a whole number from 0 to {MAX_TRIAL_DAYS}.",
            code="invalid_trial",
            param="trial_days",
        )
    if "base_fee" in fields:
        cleaned["base_fee"] = to_decimal(fields["base_fee"], param="base_fee")
        if cleaned["base_fee"] < 0:
            raise InvalidInput("Must not be negative.", code="negative_amount", param="base_fee")
    if "minimum_commitment" in fields:
        cleaned["minimum_commitment"] = to_decimal(fields["minimum_commitment"], param="minimum_commitment")
        if cleaned["minimum_commitment"] < 0:
            raise InvalidInput("Must not be negative.", code="negative_amount", param="minimum_commitment")
    if "base_fee_timing" in fields and fields["base_fee_timing"] not in FeeTiming.values:
        raise InvalidInput("in_advance or in_arrears.", code="invalid_choice", param="base_fee_timing")
    if "entitlements" in fields and not isinstance(fields["entitlements"], dict):
        raise InvalidInput(
            "Entitlements are an object of flags and quotas.",
            code="invalid_entitlements",
            param="entitlements",
        )
    if "charges" in fields:
        cleaned["charges"] = clean_charges(project, fields["charges"])
        meters = [c["meter"].pk for c in cleaned["charges"] if c["meter"] is not None]
        if len(meters) != len(set(meters)):
            raise Unprocessable("A plan prices each meter once.", code="duplicate_meter", param="charges")
    if "tax_rates" in fields:
        cleaned["tax_rates"] = tax_rates_resolve(
            project=project, references=fields["tax_rates"], param="tax_rates"
        )
    return cleaned


def _save_charges(plan: Plan, charges: list[dict[str, Any]]) -> None:
    rates = [charge.get("tax_rates") or [] for charge in charges]
    saved = Charge.objects.bulk_create(
        [
            Charge(plan=plan, position=index, **{k: v for k, v in charge.items() if k != "tax_rates"})
            for index, charge in enumerate(charges)
        ]
    )
    for charge, charge_rates in zip(saved, rates, strict=True):
        if charge_rates:
            charge.tax_rates.set(charge_rates)


def plan_create(
    *,
    project: Project,
    product: Product,
    code: str,
    name: str,
    currency: str | None = None,
    interval: str = Interval.MONTH,
    interval_count: int = 1,
    trial_days: int = 0,
    bill_usage_during_trial: bool = True,
    base_fee: Any = Decimal(0),
    base_fee_timing: str = FeeTiming.IN_ADVANCE,
    minimum_commitment: Any = Decimal(0),
    tax_rates: list[Any] | None = None,
    entitlements: dict | None = None,
    description: str = "",
    charges: list[dict[str, Any]] | None = None,
    is_private: bool = False,
    actor: Actor,
) -> Plan:
    """A new plan (version 1) with its charges, all validated before anything is saved."""
    fields = _clean_plan_fields(
        project,
        {
            "currency": currency or project.currency,
            "interval": interval,
            "interval_count": interval_count,
            "trial_days": trial_days,
            "base_fee": base_fee,
            "base_fee_timing": base_fee_timing,
            "minimum_commitment": minimum_commitment,
            "entitlements": entitlements or {},
            "charges": charges or [],
            "tax_rates": tax_rates or [],
        },
    )
    cleaned_charges = fields.pop("charges")
    rates = fields.pop("tax_rates")
    try:
        with transaction.atomic():
            plan = Plan.objects.create(
                project=project,
                product=product,
                code=code,
                name=name,
                description=description,
                bill_usage_during_trial=bill_usage_during_trial,
                is_private=is_private,
                **fields,
            )
            _save_charges(plan, cleaned_charges)
            plan.tax_rates.set(rates)
            audit_record(project=project, actor=actor, action="plan.created", target=plan)
    except IntegrityError:
        raise Conflict(
            f"A plan with code '{code}' already exists.", code="plan_code_taken", param="code"
        ) from None
    return plan


def charge_fields(charge: Charge) -> dict[str, Any]:
    """A charge as the fields that make another one like it (a new plan version, an override)."""
    return {
        **{name: getattr(charge, name) for name in PRICING_FIELDS},
        "tax_rates": list(charge.tax_rates.all()),
    }


def plan_update(*, plan: Plan, changes: dict[str, Any], actor: Actor) -> Plan:
    """Change a plan. Names, description, trial length and entitlements change in place. A
    pricing change to a plan that subscriptions use creates the next version instead (returned);
    the subscriptions keep the version they have until moved to the new one."""
    unknown = set(changes) - PLAN_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.", code="unknown_field")
    if plan.archived_at is not None:
        raise Unprocessable("An archived plan cannot change.", code="plan_archived")
    if Plan.objects.filter(previous_version=plan).exists():
        raise Conflict(
            "This is not the latest version of the plan; change the latest.", code="plan_superseded"
        )
    cleaned = _clean_plan_fields(plan.project, changes)
    repricing = PLAN_PRICING_FIELDS & set(cleaned)
    with transaction.atomic():
        if repricing and plan_in_use(plan):
            return _plan_new_version(plan, cleaned, actor=actor)
        charges = cleaned.pop("charges", None)
        rates = cleaned.pop("tax_rates", None)
        audit = _changes(plan, cleaned)
        for name, value in cleaned.items():
            setattr(plan, name, value)
        plan.save()
        if rates is not None:
            audit["tax_rates"] = [
                [rate.public_id for rate in plan.tax_rates.all()],
                [rate.public_id for rate in rates],
            ]
            plan.tax_rates.set(rates)
            drafts_stale_after_commit(project_id=plan.project_id)
        if charges is not None:
            plan.charges.all().delete()
            _save_charges(plan, charges)
            audit["charges"] = ["replaced", f"{len(charges)} charge(s)"]
        audit_record(project=plan.project, actor=actor, action="plan.updated", target=plan, changes=audit)
    return plan


def plan_new_version(*, plan: Plan, actor: Actor) -> Plan:
    """An unchanged copy of the latest version, as version + 1, to edit before moving subscriptions."""
    if Plan.objects.filter(previous_version=plan).exists():
        raise Conflict("This is not the latest version of the plan.", code="plan_superseded")
    with transaction.atomic():
        return _plan_new_version(plan, {}, actor=actor)


def _plan_new_version(plan: Plan, cleaned: dict[str, Any], *, actor: Actor) -> Plan:
    charges = cleaned.pop("charges", None)
    if charges is None:
        charges = [charge_fields(charge) for charge in plan.charges.all()]
    rates = cleaned.pop("tax_rates", None)
    copied = {
        name: getattr(plan, name)
        for name in (
            "project_id",
            "product_id",
            "code",
            "name",
            "description",
            "currency",
            "interval",
            "interval_count",
            "trial_days",
            "bill_usage_during_trial",
            "base_fee",
            "base_fee_timing",
            "minimum_commitment",
            "entitlements",
            "is_private",
        )
    }
    latest = Plan.objects.filter(project=plan.project, code=plan.code).aggregate(v=Max("version"))["v"]
    try:
        with transaction.atomic():
            successor = Plan.objects.create(
                **{**copied, **cleaned}, version=latest + 1, previous_version=plan
            )
            successor.tax_rates.set(plan.tax_rates.all() if rates is None else rates)
            _save_charges(successor, charges)
            audit_record(
                project=plan.project,
                actor=actor,
                action="plan.versioned",
                target=successor,
                changes={"previous_version": plan.public_id, "version": successor.version},
            )
    except IntegrityError:
        raise Conflict(
            "The plan was changed at the same time; retry.", code="plan_changed_concurrently"
        ) from None
    return successor


def plan_archive(*, plan: Plan, actor: Actor) -> Plan:
    return _archive(plan, actor=actor, action="plan.archived")


def plan_delete(*, plan: Plan, actor: Actor) -> None:
    with transaction.atomic():
        if plan_in_use(plan):
            raise Conflict("This plan is in use and cannot be deleted; archive it instead.", code="in_use")
        plan.charges.all().delete()
        _delete_unused(plan, actor=actor, action="plan.deleted")


# --- customers ------------------------------------------------------------------------------------


def _clean_address(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise InvalidInput(
            "The billing address is an object.", code="invalid_address", param="billing_address"
        )
    unknown = set(raw) - set(ADDRESS_FIELDS)
    if unknown:
        raise InvalidInput(
            f"Unknown address field(s): {', '.join(sorted(unknown))}.",
            code="unknown_field",
            param="billing_address",
        )
    address = {name: str(raw[name]) for name in ADDRESS_FIELDS if raw.get(name)}
    country = address.get("country")
    if country is not None and country not in countries():
        raise InvalidInput(
            f"'{country}' is not an ISO 3166 country code, upper case (e.g. US, DE).",
            code="invalid_country",
            param="billing_address.country",
        )
    return address


def _clean_customer_fields(fields: dict[str, Any]) -> dict[str, Any]:
    cleaned = dict(fields)
    if "currency" in fields:
        check(validate_currency, fields["currency"], param="currency")
    if "timezone" in fields:
        check(validate_timezone, fields["timezone"], param="timezone")
    if "billing_address" in fields:
        cleaned["billing_address"] = _clean_address(fields["billing_address"])
    if fields.get("invoice_delivery") not in (None, "", *InvoiceDelivery.values):
        raise InvalidInput(
            "auto, review, or empty for the project's setting.",
            code="invalid_choice",
            param="invoice_delivery",
        )
    if "metadata" in fields and not isinstance(fields["metadata"], dict):
        raise InvalidInput("Metadata is an object.", code="invalid_metadata", param="metadata")
    if "tax_status" in fields and fields["tax_status"] not in TaxStatus.values:
        raise InvalidInput(
            f"One of {', '.join(TaxStatus.values)}.", code="invalid_choice", param="tax_status"
        )
    if "external_id" in fields and not fields["external_id"]:
        raise InvalidInput("external_id cannot be empty.", code="blank", param="external_id")
    if fields.get("email"):
        check(validate_email_address, fields["email"], param="email")
    if fields.get("locale"):
        check(validate_locale, fields["locale"], param="locale")
    for name in ("invoice_emails", "invoice_cc"):
        if name in fields:
            check(validate_email_list, fields[name], param=name)
            cleaned[name] = list(dict.fromkeys(fields[name]))  # each address once, in order
    return cleaned


def customer_create(
    *, project: Project, actor: Actor, external_id: str | None = None, **fields: Any
) -> Customer:
    """A customer; currency and time zone default to the project's, external_id to the public ID.
    `tax_rates` (IDs or TaxRate objects of the project, not archived) override the project's
    default rates for this customer."""
    fields.setdefault("currency", project.currency)
    fields.setdefault("timezone", project.timezone)
    if external_id is not None:
        fields["external_id"] = external_id
    tax_rates = fields.pop("tax_rates", None)
    cleaned = _clean_customer_fields(fields)
    if tax_rates is not None:
        tax_rates = tax_rates_resolve(project=project, references=tax_rates, param="tax_rates")
    customer = Customer(project=project, **cleaned)
    customer.external_id = customer.external_id or customer.public_id
    try:
        with transaction.atomic():
            customer.save()
            if tax_rates:
                customer.tax_rates.set(tax_rates)
            audit_record(project=project, actor=actor, action="customer.created", target=customer)
            event_record(project=project, type="customer.created", obj=customer)
    except IntegrityError:
        raise Conflict(
            f"A customer with external_id '{customer.external_id}' already exists.",
            code="external_id_taken",
            param="external_id",
        ) from None
    # Usage may have named the customer by either (stripeCustomerId: the processor's ID).
    references = [customer.external_id, customer.processor_customer_id]
    usage_rematch_enqueue(project=project, customer_external_ids=[name for name in references if name])
    return customer


def customer_update(*, customer: Customer, changes: dict[str, Any], actor: Actor) -> Customer:
    """Change what `changes` names; a change to nothing (the same values) records nothing."""
    changes = dict(changes)
    tax_rates = changes.pop("tax_rates", None)
    cleaned = _clean_customer_fields(changes)
    if tax_rates is not None:
        tax_rates = tax_rates_resolve(project=customer.project, references=tax_rates, param="tax_rates")
    try:
        with transaction.atomic():
            audit = _changes(customer, cleaned)
            if tax_rates is not None:
                before = sorted(customer.tax_rates.values_list("public_id", flat=True))
                after = sorted(rate.public_id for rate in tax_rates)
                if before != after:
                    audit["tax_rates"] = [", ".join(before), ", ".join(after)]
            if not audit:
                return customer
            for name, value in cleaned.items():
                setattr(customer, name, value)
            customer.save()
            if "tax_rates" in audit:
                customer.tax_rates.set(tax_rates)
            audit_record(
                project=customer.project,
                actor=actor,
                action="customer.updated",
                target=customer,
                changes=audit,
            )
            event_record(project=customer.project, type="customer.updated", obj=customer)
            if {"tax_status", "tax_rates"} & set(audit):
                drafts_stale_after_commit(project_id=customer.project_id, customer_id=customer.pk)
    except IntegrityError:
        raise Conflict(
            "A customer with this external_id already exists.", code="external_id_taken", param="external_id"
        ) from None
    references = [customer.external_id] if "external_id" in cleaned else []
    if customer.processor_customer_id and "processor_customer_id" in cleaned:
        references.append(customer.processor_customer_id)  # usage may name the customer by it
    usage_rematch_enqueue(project=customer.project, customer_external_ids=references)
    return customer


def customer_delete(*, customer: Customer, actor: Actor) -> None:
    """Only a customer with no subscriptions, usage, invoices or payment methods can be deleted
    (a removed payment method keeps its row, for the payments that name it)."""
    try:
        with transaction.atomic():
            # Locked before Django looks for what protects it: a wallet created meanwhile
            # (invoicing.credits.wallet_get_or_create locks the row too) is then seen.
            Customer.objects.select_for_update().filter(pk=customer.pk).exists()
            audit_record(project=customer.project, actor=actor, action="customer.deleted", target=customer)
            event_record(project=customer.project, type="customer.deleted", obj=customer)
            customer.delete()
    except ProtectedError:
        raise Conflict(
            "This customer has subscriptions, usage, invoices or payment methods and cannot be deleted.",
            code="in_use",
        ) from None


# --- contracts ------------------------------------------------------------------------------------

CONTRACTS_PRODUCT_CODE = "contracts"


def _contracts_product(project: Project, *, actor: Actor) -> Product:
    """The product private contract plans belong to, created on first use."""
    product = Product.objects.filter(project=project, code=CONTRACTS_PRODUCT_CODE).first()
    if product is None:
        product = product_create(project=project, code=CONTRACTS_PRODUCT_CODE, name="Contracts", actor=actor)
    return product


def contract_accept(*, contract: Contract, actor: Actor) -> Contract:
    """Accept a contract: link or create the customer, build a private plan from the lines, and
    subscribe the customer from the start date (local midnight in the customer's time zone).

    All of it happens in one transaction: if any step fails, nothing is created and the contract
    stays a draft. An accepted contract is read-only.
    """
    from subscriptions.services import subscription_create  # deferred: it imports this module

    with transaction.atomic():
        contract = Contract.objects.select_for_update().get(pk=contract.pk)
        if contract.status == ContractStatus.ACCEPTED:
            raise InvalidState(
                "This contract was already accepted.",
                current=ContractStatus.ACCEPTED,
                requested=ContractStatus.ACCEPTED,
                code="contract_already_accepted",
            )
        lines = list(contract.lines.all())
        if not lines:
            raise InvalidInput(
                "A contract needs at least one line item.", code="contract_has_no_lines", param="lines"
            )
        project = contract.project
        customer = contract.customer or customer_create(
            project=project,
            actor=actor,
            external_id=contract.customer_external_id or None,
            name=contract.customer_name,
            email=contract.customer_email,
            currency=contract.currency,
        )
        plan = plan_create(
            project=project,
            product=_contracts_product(project, actor=actor),
            code=f"contract.{contract.public_id}",
            name=contract.title,
            currency=contract.currency,
            interval=contract.interval,
            interval_count=contract.interval_count,
            charges=[{name: getattr(line, name) for name in PRICING_FIELDS} for line in lines],
            is_private=True,
            actor=actor,
        )
        starts_at = datetime.combine(contract.start_date, time.min, tzinfo=ZoneInfo(customer.timezone))
        subscription = subscription_create(
            project=project,
            customer=customer,
            plan=plan,
            starts_at=starts_at,
            trial_days=0,
            billing_anchor=contract.billing_anchor,
            payment_terms_days=contract.payment_terms_days,
            external_reference=contract.public_id,
            actor=actor,
        )
        contract.status = ContractStatus.ACCEPTED
        contract.accepted_at = timezone.now()
        contract.accepted_by = actor if actor is not None and not isinstance(actor, ApiKey) else None
        contract.customer, contract.plan, contract.subscription = customer, plan, subscription
        contract.save()
        audit_record(project=project, actor=actor, action="contract.accepted", target=contract)
        event_record(project=project, type="contract.accepted", obj=contract)
    return contract
