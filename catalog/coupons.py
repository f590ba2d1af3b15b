"""Coupons and their redemptions: the services that write them and the selectors that read them.
What a coupon takes off an invoice is the invoice maths' business (invoicing/), which reads the
redemptions through `coupon_redemptions_active`.

A coupon's discount (kind, amounts) and duration never change once it exists: redemptions and
issued discount lines rely on them. Its name, `redeem_by` and `max_redemptions` may.
"""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from accounts.models import Project
from accounts.services import Actor, audit_record
from billing_site.errors import Conflict, InvalidInput, Unprocessable
from billing_site.money import DecimalError, decimal_from_json, minor_unit_exponent
from billing_site.validators import check, validate_currency
from catalog.models import (
    Charge,
    Coupon,
    CouponDuration,
    CouponKind,
    CouponRedemption,
    Customer,
    Plan,
)
from catalog.pricing import MAX_PERCENTAGE, PERCENTAGE_PLACES, PRICE_DIGITS, PRICE_PLACES
from meters.staleness import drafts_stale_after_commit
from subscriptions.models import Subscription
from webhooks.services import event_record

COUPON_EDITABLE = frozenset({"name", "redeem_by", "max_redemptions"})
AMOUNT_INTEGER_DIGITS = PRICE_DIGITS - PRICE_PLACES
# The most decimals any currency has (KWD, BHD: 3); each amount is held to its own currency's.
AMOUNT_PLACES = 3
MAX_DURATION_PERIODS = 1000

# --- selectors ------------------------------------------------------------------------------------


def coupon_list(*, project: Project) -> QuerySet[Coupon]:
    """Coupons with their plan and charge limits, annotated with `times_redeemed` (every redemption
    ever made, removed ones included: what `max_redemptions` counts)."""
    return (
        Coupon.objects.filter(project=project)
        .prefetch_related("plans", "charges")
        .annotate(times_redeemed=Count("redemptions"))
    )


def coupon_by_reference(*, project: Project, reference: str) -> Coupon | None:
    """A coupon by its ID (`cpn_…`) or, failing that, its code (what customers type)."""
    found = coupon_list(project=project).filter(public_id=reference).first()
    return found or coupon_list(project=project).filter(code=reference).first()


def coupon_redemption_list(*, customer: Customer) -> QuerySet[CouponRedemption]:
    """The customer's redemptions in force (not removed), oldest first."""
    return (
        CouponRedemption.objects.filter(customer=customer, removed_at__isnull=True)
        .select_related("coupon", "customer", "subscription")
        .prefetch_related("coupon__plans", "coupon__charges")
        .order_by("created_at", "id")
    )


def coupon_redemption_find(*, customer: Customer, public_id: str) -> CouponRedemption | None:
    """One of the customer's redemptions, removed or not."""
    return CouponRedemption.objects.filter(customer=customer, public_id=public_id).first()


def coupon_redemptions_active(*, subscription: Subscription) -> list[CouponRedemption]:
    """The redemptions in force that apply to the subscription: its own and its customer's
    customer-wide ones, in the order they were made, each with its coupon, the coupon's plans and
    charges loaded. A coupon archived after it was redeemed still applies (archiving stops new
    redemptions only); how many invoices a redemption has discounted is on the discount lines."""
    return list(
        CouponRedemption.objects.filter(
            customer_id=subscription.customer_id, project_id=subscription.project_id, removed_at__isnull=True
        )
        .filter(Q(subscription=subscription) | Q(subscription__isnull=True))
        .select_related("coupon")
        .prefetch_related("coupon__plans", "coupon__charges")
        .order_by("created_at", "id")
    )


# --- validation -----------------------------------------------------------------------------------


def _decimal(value: Any, *, places: int, integer_digits: int, param: str) -> Decimal:
    try:
        return decimal_from_json(value, integer_digits=integer_digits, places=places)
    except DecimalError as error:
        raise InvalidInput(error.message, code=error.code, param=param) from None


def clean_amount_off(raw: Any) -> dict[str, str]:
    """{"USD": "10.00", "JPY": 1500}: each an ISO 4217 code and a positive amount with at most the
    currency's decimals, stored as a decimal string to the currency's minor unit."""
    if not isinstance(raw, dict):
        raise InvalidInput("An object of amounts by currency.", code="invalid_type", param="amount_off")
    cleaned = {}
    for currency, value in raw.items():
        at = f"amount_off.{currency}"
        check(validate_currency, currency, param=at)
        amount = _decimal(value, places=AMOUNT_PLACES, integer_digits=AMOUNT_INTEGER_DIGITS, param=at)
        if amount <= 0:
            raise Unprocessable("An amount off is above 0.", code="amount_not_positive", param=at)
        exponent = minor_unit_exponent(currency)
        if amount.as_tuple().exponent < -exponent:
            raise Unprocessable(
                f"{currency} amounts have at most {exponent} decimal places.",
                code="too_many_decimal_places",
                param=at,
            )
        cleaned[currency] = format(amount.quantize(Decimal(1).scaleb(-exponent)), "f")
    return cleaned


def _resolve(model, project: Project, references: Iterable[Any], *, param: str, scope: Q) -> list:
    found = {}
    for index, reference in enumerate(references):
        at = f"{param}[{index}]"
        if isinstance(reference, model):
            obj = model.objects.filter(scope, pk=reference.pk).first()
        elif isinstance(reference, str):
            obj = model.objects.filter(scope, public_id=reference).first()
        else:
            raise InvalidInput("An ID.", code="invalid_type", param=at)
        if obj is None:
            name = model._meta.verbose_name
            raise Unprocessable(f"No such {name}: '{reference}'.", code="not_found", param=at)
        found.setdefault(obj.pk, obj)
    return list(found.values())


def _check_redeem_by(redeem_by: datetime | None) -> None:
    if redeem_by is not None and redeem_by <= timezone.now():
        raise Unprocessable("redeem_by is in the past.", code="redeem_by_in_past", param="redeem_by")


def _check_max_redemptions(value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidInput(
            "max_redemptions is a whole number from 1.", code="invalid_integer", param="max_redemptions"
        )


def clean_discount(
    kind: str, percent_off: Any, amount_off: Any, duration: str, duration_periods: Any
) -> dict[str, Any]:
    if kind not in CouponKind.values:
        raise InvalidInput(f"One of {', '.join(CouponKind.values)}.", code="invalid_choice", param="kind")
    if duration not in CouponDuration.values:
        raise InvalidInput(
            f"One of {', '.join(CouponDuration.values)}.", code="invalid_choice", param="duration"
        )
    cleaned: dict[str, Any] = {"kind": kind, "duration": duration, "percent_off": None, "amount_off": {}}
    if kind == CouponKind.PERCENTAGE:
        if amount_off:
            raise Unprocessable(
                "A percentage coupon has no amount_off.", code="amount_off_not_allowed", param="amount_off"
            )
        if percent_off is None:
            raise Unprocessable(
                "A percentage coupon needs percent_off.", code="percent_off_required", param="percent_off"
            )
        percent = _decimal(percent_off, places=PERCENTAGE_PLACES, integer_digits=3, param="percent_off")
        if not 0 < percent <= MAX_PERCENTAGE:
            raise Unprocessable(
                "percent_off is above 0 and at most 100.",
                code="percent_off_out_of_range",
                param="percent_off",
            )
        cleaned["percent_off"] = percent
    else:
        if percent_off is not None:
            raise Unprocessable(
                "A fixed-amount coupon has no percent_off.",
                code="percent_off_not_allowed",
                param="percent_off",
            )
        if not amount_off:
            raise Unprocessable(
                "A fixed-amount coupon needs amount_off in at least one currency.",
                code="amount_off_required",
                param="amount_off",
            )
        cleaned["amount_off"] = clean_amount_off(amount_off)
    if duration == CouponDuration.REPEATING:
        if duration_periods is None:
            raise Unprocessable(
                "A repeating coupon needs duration_periods.",
                code="duration_periods_required",
                param="duration_periods",
            )
        if (
            isinstance(duration_periods, bool)
            or not isinstance(duration_periods, int)
            or not 1 <= duration_periods <= MAX_DURATION_PERIODS
        ):
            raise InvalidInput(
                f"duration_periods is a whole number from 1 to {MAX_DURATION_PERIODS}.",
                code="invalid_integer",
                param="duration_periods",
            )
    elif duration_periods is not None:
        raise Unprocessable(
            "Only a repeating coupon has duration_periods.",
            code="duration_periods_not_allowed",
            param="duration_periods",
        )
    cleaned["duration_periods"] = duration_periods
    return cleaned


# --- coupons --------------------------------------------------------------------------------------


def coupon_create(
    *,
    project: Project,
    code: str,
    name: str,
    kind: str,
    percent_off: Any = None,
    amount_off: dict[str, Any] | None = None,
    duration: str = CouponDuration.ONCE,
    duration_periods: int | None = None,
    plans: Iterable[Any] = (),
    charges: Iterable[Any] = (),
    max_redemptions: int | None = None,
    redeem_by: datetime | None = None,
    actor: Actor,
) -> Coupon:
    """A coupon, all validated before anything is saved. `plans` and `charges` (IDs or objects of
    the project) limit the lines it discounts; none: every fee and usage line."""
    if not str(name).strip():
        raise Unprocessable(
            "A coupon needs a name (not only spaces or control characters).", code="blank", param="name"
        )
    cleaned = clean_discount(kind, percent_off, amount_off, duration, duration_periods)
    _check_max_redemptions(max_redemptions)
    _check_redeem_by(redeem_by)
    plan_objects = _resolve(Plan, project, plans, param="plans", scope=Q(project=project))
    charge_objects = _resolve(Charge, project, charges, param="charges", scope=Q(plan__project=project))
    try:
        with transaction.atomic():
            coupon = Coupon.objects.create(
                project=project,
                code=code,
                name=name,
                max_redemptions=max_redemptions,
                redeem_by=redeem_by,
                **cleaned,
            )
            coupon.plans.set(plan_objects)
            coupon.charges.set(charge_objects)
            coupon = coupon_list(project=project).get(pk=coupon.pk)
            audit_record(project=project, actor=actor, action="coupon.created", target=coupon)
            event_record(project=project, type="coupon.created", obj=coupon)
    except IntegrityError:
        raise Conflict(
            f"A coupon with code '{code}' already exists.", code="coupon_code_taken", param="code"
        ) from None
    return coupon


def coupon_update(*, coupon: Coupon, changes: dict[str, Any], actor: Actor) -> Coupon:
    """Rename it, move or clear `redeem_by`, change `max_redemptions` (not below the redemptions
    made). A change to nothing records nothing; an archived coupon does not change."""
    unknown = set(changes) - COUPON_EDITABLE
    if unknown:
        raise InvalidInput(
            f"Only {', '.join(sorted(COUPON_EDITABLE))} change; create another coupon instead.",
            code="unknown_field",
            param=sorted(unknown)[0],
        )
    if "name" in changes and not str(changes["name"]).strip():
        raise Unprocessable(
            "A coupon needs a name (not only spaces or control characters).", code="blank", param="name"
        )
    if "max_redemptions" in changes:
        _check_max_redemptions(changes["max_redemptions"])
    if changes.get("redeem_by") is not None:
        _check_redeem_by(changes["redeem_by"])
    with transaction.atomic():
        locked = Coupon.objects.select_for_update().get(pk=coupon.pk)  # against a concurrent redemption
        if locked.archived_at is not None:
            raise Unprocessable("An archived coupon does not change.", code="coupon_archived")
        limit = changes.get("max_redemptions")
        if limit is not None and limit < locked.redemptions.count():
            raise Unprocessable(
                "max_redemptions is below the redemptions already made.",
                code="max_redemptions_below_redeemed",
                param="max_redemptions",
            )
        audit = {
            name: [str(getattr(locked, name)), str(value)]
            for name, value in changes.items()
            if getattr(locked, name) != value
        }
        if audit:
            for name, value in changes.items():
                setattr(locked, name, value)
            locked.save(update_fields=list(audit))
        coupon = coupon_list(project=locked.project).get(pk=locked.pk)
        if audit:
            audit_record(
                project=coupon.project, actor=actor, action="coupon.updated", target=coupon, changes=audit
            )
            event_record(project=coupon.project, type="coupon.updated", obj=coupon)
    return coupon


def coupon_archive(*, coupon: Coupon, actor: Actor) -> Coupon:
    """No new redemptions from now on; redemptions already made keep applying until removed.
    Archiving it again changes nothing and records nothing."""
    with transaction.atomic():
        archived = Coupon.objects.filter(pk=coupon.pk, archived_at__isnull=True).update(
            archived_at=timezone.now()
        )
        coupon = coupon_list(project=coupon.project).get(pk=coupon.pk)
        if archived:
            audit_record(project=coupon.project, actor=actor, action="coupon.archived", target=coupon)
            event_record(project=coupon.project, type="coupon.archived", obj=coupon)
    return coupon


# --- redemptions ----------------------------------------------------------------------------------


def coupon_redeem(
    *, customer: Customer, coupon: Coupon, subscription: Subscription | None = None, actor: Actor
) -> CouponRedemption:
    """Apply a coupon to a customer (every subscription) or to one of their subscriptions.

    The coupon row is locked while its rules are checked and the redemption written, so concurrent
    redemptions are counted one after another and never exceed `max_redemptions` (removed
    redemptions count too: a removal does not hand the redemption back). The same coupon in force
    twice for the same customer or subscription is refused by the database's partial unique
    constraints (409 `coupon_already_applied`), not by a check here.
    """
    project = customer.project
    if coupon.project_id != project.pk:
        raise Unprocessable(f"No such coupon: '{coupon.public_id}'.", code="not_found", param="coupon")
    if subscription is not None and subscription.customer_id != customer.pk:
        raise Unprocessable(
            f"The subscription {subscription.public_id} is not this customer's.",
            code="subscription_not_of_customer",
            param="subscription",
        )
    try:
        with transaction.atomic():
            locked = Coupon.objects.select_for_update().get(pk=coupon.pk)
            if locked.archived_at is not None:
                raise Unprocessable("This coupon is archived.", code="coupon_archived", param="coupon")
            if locked.redeem_by is not None and locked.redeem_by <= timezone.now():
                raise Unprocessable(
                    "This coupon could be redeemed until "
                    f"{locked.redeem_by.isoformat().replace('+00:00', 'Z')}.",
                    code="coupon_expired",
                    param="coupon",
                )
            if locked.max_redemptions is not None and locked.redemptions.count() >= locked.max_redemptions:
                raise Unprocessable(
                    "This coupon has been redeemed as many times as it may be.",
                    code="coupon_max_redemptions_reached",
                    param="coupon",
                )
            if locked.kind == CouponKind.FIXED_AMOUNT and customer.currency not in locked.amount_off:
                raise Unprocessable(
                    f"This coupon has no amount off in {customer.currency}, the customer's currency.",
                    code="coupon_currency_unavailable",
                    param="coupon",
                )
            redemption = CouponRedemption.objects.create(
                project=project, coupon=locked, customer=customer, subscription=subscription
            )
            audit_record(project=project, actor=actor, action="coupon.redeemed", target=redemption)
            event_record(project=project, type="coupon.redeemed", obj=redemption)
            drafts_stale_after_commit(project_id=project.pk, customer_id=customer.pk)
    except IntegrityError:
        whom = "subscription" if subscription is not None else "customer"
        raise Conflict(
            f"This coupon is already applied to this {whom}.", code="coupon_already_applied", param="coupon"
        ) from None
    return redemption


def coupon_redemption_remove(*, redemption: CouponRedemption, actor: Actor) -> CouponRedemption:
    """End a redemption: it discounts no invoice from now on (discount lines already made stay).
    Removing it again changes nothing and records nothing."""
    with transaction.atomic():
        removed = CouponRedemption.objects.filter(pk=redemption.pk, removed_at__isnull=True).update(
            removed_at=timezone.now()
        )
        redemption.refresh_from_db(fields=["removed_at"])
        if removed:
            project = redemption.project
            audit_record(project=project, actor=actor, action="coupon.redemption_removed", target=redemption)
            event_record(project=project, type="coupon.redemption_removed", obj=redemption)
            drafts_stale_after_commit(project_id=project.pk, customer_id=redemption.customer_id)
    return redemption
