"""Subscription lifecycle. Every change closes the open phase and opens the next one, so the
phases always say which plan applied when and what was paused: invoices are rated from them, and
no usage history is ever lost."""

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from accounts.models import Project
from accounts.services import Actor, audit_record
from billing_site.errors import Conflict, InvalidInput, InvalidState, Unprocessable
from billing_site.moments import MomentError, moment_check
from catalog.models import BillingAnchor, Customer, Plan
from catalog.pricing import to_decimal
from catalog.services import charge_fields, clean_charges, plan_create, plan_update
from meters.services import usage_rematch_enqueue
from subscriptions.models import Status, Subscription, SubscriptionPhase
from subscriptions.periods import Period, PeriodGrid
from webhooks.services import event_record

CHANGE_NOW = "now"
CHANGE_AT_PERIOD_END = "period_end"
# Stripe's proration_behavior for a plan change: see subscription_change_plan.
PRORATE = "create_prorations"
PRORATE_NONE = "none"
PRORATE_ALWAYS_INVOICE = "always_invoice"
# A plan change "at" a moment a client computed as now may arrive a little after it.
CLOCK_SKEW = timedelta(minutes=5)
# How a start in the past is billed: its ended periods on one catch-up invoice, or not at all.
PAST_CATCH_UP = "catch_up"
PAST_NONE = "none"
TERMS_FIELDS = frozenset({"ends_at", "external_reference", "metadata", "payment_terms_days"})


def period_grid(subscription: Subscription, plan: Plan | None = None) -> PeriodGrid:
    plan = plan or subscription.plan
    return PeriodGrid(
        anchor=subscription.period_anchor,
        timezone=subscription.timezone,
        interval=plan.interval,
        interval_count=plan.interval_count,
        anniversary=subscription.billing_anchor == BillingAnchor.ANNIVERSARY,
    )


def _local_days_later(moment: datetime, days: int, tz: str) -> datetime:
    """`days` calendar days later at the same local time (a day is not always 24 h)."""
    zone = ZoneInfo(tz)
    local = moment.astimezone(zone).replace(tzinfo=None) + timedelta(days=days)
    return local.replace(tzinfo=zone).astimezone(moment.tzinfo)


def _in_range(moment: datetime, *, param: str) -> datetime:
    """The moment in UTC, if billing can handle it (billing_site.moments); the API checks first,
    this guards the other callers (contracts accepted in the admin)."""
    try:
        return moment_check(moment)
    except MomentError as error:
        raise Unprocessable(error.message, code=error.code, param=param) from None


def _check_plan_usable(plan: Plan, customer: Customer, *, param: str = "plan") -> None:
    if plan.archived_at is not None:
        raise Unprocessable("This plan is archived.", code="plan_archived", param=param)
    if Plan.objects.filter(previous_version=plan).exists():
        raise Unprocessable(
            "This plan has a newer version; subscribe to the latest.", code="plan_superseded", param=param
        )
    if plan.currency != customer.currency:
        raise Unprocessable(
            f"The plan is priced in {plan.currency} but the customer is billed in {customer.currency}.",
            code="currency_mismatch",
            param=param,
        )


def _record(
    subscription: Subscription, event_type: str, *, actor: Actor, changes: dict | None = None
) -> None:
    """Audit and announce a change, and have billing catch up once it commits: the opening invoice
    of a subscription that started, the upcoming invoice repriced after a change."""
    audit_record(
        project=subscription.project,
        actor=actor,
        action=event_type,
        target=subscription,
        changes=changes or {},
    )
    event_record(project=subscription.project, type=event_type, obj=subscription)
    transaction.on_commit(lambda: async_task("invoicing.tasks.bill_subscription", subscription.pk))


def subscription_create(
    *,
    project: Project,
    customer: Customer,
    plan: Plan,
    actor: Actor,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    trial_days: int | None = None,
    billing_anchor: str = BillingAnchor.CALENDAR,
    bill_past_periods: str = PAST_CATCH_UP,
    external_reference: str = "",
    payment_terms_days: int | None = None,
    metadata: dict | None = None,
) -> Subscription:
    """Subscribe a customer to a plan from `starts_at` (default now; future starts allowed).

    Periods are computed in the customer's time zone as it is now; the trial defaults to the
    plan's `trial_days`, counted in local calendar days.

    A start in the past begins in the period that contains now. With `bill_past_periods`
    "catch_up" (the default) the time before that period is billed on the opening invoice, one
    catch-up invoice for [starts_at, catch_up_until): each past period's fees and usage as its
    own lines, never an invoice per past period. With "none", billing counts from now: nothing
    before it is billed, and the current period's fees are prorated from now.
    """
    _check_plan_usable(plan, customer)
    now = timezone.now()
    starts_at = _in_range(starts_at or now, param="starts_at")
    if ends_at is not None:
        ends_at = _in_range(ends_at, param="ends_at")
    if ends_at is not None and ends_at <= starts_at:
        raise Unprocessable("ends_at must be after starts_at.", code="ends_before_start", param="ends_at")
    trial_days = plan.trial_days if trial_days is None else trial_days
    if trial_days < 0:
        raise InvalidInput("trial_days cannot be negative.", code="min_value", param="trial_days")
    backdated = starts_at < now
    subscription = Subscription(
        project=project,
        customer=customer,
        plan=plan,
        starts_at=starts_at,
        billed_from=now if backdated and bill_past_periods == PAST_NONE else starts_at,
        ends_at=ends_at,
        trial_ends_at=_local_days_later(starts_at, trial_days, customer.timezone) if trial_days else None,
        billing_anchor=billing_anchor,
        period_anchor=starts_at,
        timezone=customer.timezone,
        external_reference=external_reference,
        payment_terms_days=payment_terms_days,
        metadata=metadata or {},
    )
    current = period_grid(subscription, plan).period_at(now if backdated else starts_at)
    start = max(current.start, subscription.billed_from)
    if ends_at is not None and ends_at <= start:  # its whole life is past: nothing left to bill after
        start = current_end = ends_at
    else:
        current_end = current.end
    subscription.current_period_start, subscription.current_period_end = start, current_end
    if subscription.billed_from < start:
        subscription.catch_up_until = start
    with transaction.atomic():
        subscription.save()
        SubscriptionPhase.objects.create(
            subscription=subscription, plan=plan, starts_at=starts_at, ends_at=ends_at
        )
        _record(subscription, "subscription.created", actor=actor)
    usage_rematch_enqueue(project=project, customer_external_ids=[customer.external_id])
    return subscription


def _locked(subscription: Subscription) -> Subscription:
    return (
        Subscription.objects.select_for_update()
        .select_related("plan", "customer", "project")
        .get(pk=subscription.pk)
    )


def _refuse(subscription: Subscription, requested: str, why: str) -> InvalidState:
    return InvalidState(why, current=subscription.status, requested=requested)


def _open_phase(subscription: Subscription) -> SubscriptionPhase:
    return subscription.phases.filter(ends_at__isnull=True).get()


def _drop_future_phases(subscription: Subscription, after: datetime) -> None:
    """Phases scheduled to start later (a plan change at period end) never took effect: the
    phase before them runs on to the end of the subscription's life."""
    if subscription.phases.filter(starts_at__gt=after).delete()[0]:
        last = subscription.phases.filter(starts_at__lte=after).order_by("-starts_at").first()
        if last is not None:
            last.ends_at = subscription.ends_at
            last.save(update_fields=["ends_at"])


def _switch_phase(
    subscription: Subscription, at: datetime, *, plan: Plan, paused: bool, prorate: bool = True
) -> None:
    """End the phase running at `at` there and open the next, which ends where that one did."""
    current = (
        subscription.phases.filter(starts_at__lte=at)
        .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=at))
        .get()
    )
    if current.starts_at == at:  # a second change at the same instant replaces the first
        current.plan, current.paused, current.prorate = plan, paused, prorate
        current.save(update_fields=["plan", "paused", "prorate"])
        return
    SubscriptionPhase.objects.create(
        subscription=subscription,
        plan=plan,
        starts_at=at,
        ends_at=current.ends_at,
        paused=paused,
        prorate=prorate,
    )
    current.ends_at = at
    current.save(update_fields=["ends_at"])


def subscription_pause(*, subscription: Subscription, actor: Actor) -> Subscription:
    """Pause now: no base fee accrues and usage is not billed until resumed."""
    now = timezone.now()
    with transaction.atomic():
        subscription = _locked(subscription)
        if subscription.status not in (Status.ACTIVE, Status.TRIALING):
            raise _refuse(
                subscription, Status.PAUSED, f"A {subscription.status} subscription cannot be paused."
            )
        if subscription.phases.filter(starts_at__gt=now).exists():
            raise Conflict(
                "A plan change is scheduled for the period end; cancel it before pausing.",
                code="change_scheduled",
            )
        _switch_phase(subscription, now, plan=subscription.plan, paused=True)
        subscription.paused_at = now
        subscription.save(update_fields=["paused_at", "updated_at"])
        _record(subscription, "subscription.paused", actor=actor)
    return subscription


def subscription_resume(*, subscription: Subscription, actor: Actor) -> Subscription:
    now = timezone.now()
    with transaction.atomic():
        subscription = _locked(subscription)
        if subscription.status != Status.PAUSED:
            raise _refuse(
                subscription,
                Status.ACTIVE,
                f"Only a paused subscription can resume; this one is {subscription.status}.",
            )
        _switch_phase(subscription, now, plan=subscription.plan, paused=False)
        subscription.paused_at = None
        subscription.save(update_fields=["paused_at", "updated_at"])
        _record(subscription, "subscription.resumed", actor=actor)
    usage_rematch_enqueue(
        project=subscription.project, customer_external_ids=[subscription.customer.external_id]
    )
    return subscription


def subscription_cancel(*, subscription: Subscription, at_period_end: bool, actor: Actor) -> Subscription:
    """Cancel now, or at the end of the current period (it stays active until then)."""
    now = timezone.now()
    with transaction.atomic():
        subscription = _locked(subscription)
        status = subscription.status
        if status in (Status.CANCELED, Status.ENDED):
            raise _refuse(subscription, Status.CANCELED, f"The subscription has already {status}.")
        if at_period_end and status in (Status.SCHEDULED, Status.PAUSED):
            raise _refuse(subscription, Status.CANCELED, f"A {status} subscription can only be canceled now.")
        ends_at = subscription.current_period_end if at_period_end else now
        _drop_future_phases(subscription, after=ends_at)
        if status == Status.SCHEDULED:
            ends_at = subscription.starts_at  # it never started: an empty life, no billing
        else:
            open_phase = subscription.phases.filter(ends_at__isnull=True).first()
            if open_phase is not None and open_phase.starts_at >= ends_at:
                open_phase.delete()  # it would start as it ends: it never applied
            elif open_phase is not None:
                open_phase.ends_at = ends_at
                open_phase.save(update_fields=["ends_at"])
        subscription.ends_at = ends_at
        subscription.canceled_at = now
        subscription.cancel_at_period_end = at_period_end
        subscription.save(update_fields=["ends_at", "canceled_at", "cancel_at_period_end", "updated_at"])
        _record(subscription, "subscription.canceled", actor=actor, changes={"ends_at": ends_at.isoformat()})
    return subscription


def subscription_uncancel(*, subscription: Subscription, actor: Actor) -> Subscription:
    """Undo a cancellation scheduled for the period end, before it takes effect."""
    with transaction.atomic():
        subscription = _locked(subscription)
        if not subscription.cancel_at_period_end or subscription.status in (Status.CANCELED, Status.ENDED):
            raise _refuse(subscription, Status.ACTIVE, "No cancellation is pending.")
        last = subscription.phases.order_by("-starts_at").first()
        last.ends_at = None
        last.save(update_fields=["ends_at"])
        subscription.ends_at = None
        subscription.canceled_at = None
        subscription.cancel_at_period_end = False
        subscription.save(update_fields=["ends_at", "canceled_at", "cancel_at_period_end", "updated_at"])
        _record(subscription, "subscription.updated", actor=actor, changes={"cancel_at_period_end": False})
    return subscription


def _effective_moment(subscription: Subscription, value: datetime, now: datetime) -> datetime:
    """A plan change's moment given as a time: in the current period, not in the future (a change
    scheduled ahead is `period_end`), not before the subscription's last change."""
    at = _in_range(value, param="effective_at")
    if at > now + CLOCK_SKEW:
        raise Unprocessable(
            "effective_at is in the future; to switch later, use effective_at=period_end.",
            code="effective_at_in_future",
            param="effective_at",
        )
    at = min(at, now)
    if at < subscription.current_period_start or at < subscription.billed_from:
        raise Unprocessable(
            "effective_at is before the current billing period, which may not change once billed "
            f"(it started {subscription.current_period_start.isoformat()}).",
            code="effective_at_in_closed_period",
            param="effective_at",
        )
    if subscription.phases.filter(starts_at__gt=at, starts_at__lte=now).exists():
        raise Unprocessable(
            "The subscription changed after effective_at; a change cannot go back past another.",
            code="effective_at_before_last_change",
            param="effective_at",
        )
    return at


def subscription_change_plan(
    *,
    subscription: Subscription,
    plan: Plan,
    change_at: str | datetime = CHANGE_NOW,
    proration_behavior: str = PRORATE,
    actor: Actor,
) -> Subscription:
    """Move to another plan now, at a past moment of the current period, or at the end of the
    current period. Usage before the change is billed on the old plan, after it on the new.

    Fixed fees (Stripe's proration_behavior): `create_prorations` prorates them by time between
    the two plans, settled on the next invoice; `always_invoice` does the same and invoices the
    difference at once (invoicing.tasks.invoice_prorations); `none` keeps the old plan's fees to
    the end of the period (the new plan's start with the next one).

    A change to a plan with another interval starts a new billing cycle at the change: the
    current period ends there and the next periods follow the new plan's interval.
    """
    now = timezone.now()
    with transaction.atomic():
        subscription = _locked(subscription)
        status = subscription.status
        if status in (Status.CANCELED, Status.ENDED, Status.PAUSED):
            raise _refuse(subscription, "plan_change", f"A {status} subscription cannot change plan.")
        _check_plan_usable(plan, subscription.customer)
        if plan.pk == subscription.plan_id and change_at != CHANGE_AT_PERIOD_END:
            raise Unprocessable("The subscription is already on this plan.", code="same_plan", param="plan")
        old_plan = subscription.plan
        new_cycle = (plan.interval, plan.interval_count) != (old_plan.interval, old_plan.interval_count)
        if proration_behavior == PRORATE_NONE and new_cycle and change_at != CHANGE_AT_PERIOD_END:
            raise Unprocessable(
                "A change to a plan with another interval ends the current period at the change, "
                "so its fees are prorated: proration_behavior none applies to plans of one interval.",
                code="proration_required",
                param="proration_behavior",
            )
        if change_at == CHANGE_AT_PERIOD_END:
            at = subscription.current_period_end
            if subscription.ends_at is not None and subscription.ends_at <= at:
                raise _refuse(subscription, "plan_change", "The subscription ends before its next period.")
            _drop_future_phases(subscription, after=now)
            _switch_phase(subscription, at, plan=plan, paused=False)
        else:
            if change_at == CHANGE_NOW:
                at = max(now, subscription.starts_at)
            else:
                at = _effective_moment(subscription, change_at, now)
            _drop_future_phases(subscription, after=at)
            _switch_phase(
                subscription, at, plan=plan, paused=False, prorate=proration_behavior != PRORATE_NONE
            )
            subscription.plan = plan
            if new_cycle and at > subscription.starts_at:
                subscription.current_period_end = at
                subscription.period_anchor = at
            elif at == subscription.starts_at:
                first = period_grid(subscription, plan).period_at(at)
                subscription.current_period_start, subscription.current_period_end = first.start, first.end
        subscription.save()
        _record(
            subscription,
            "subscription.updated",
            actor=actor,
            changes={
                "plan": [old_plan.public_id, plan.public_id],
                "effective_at": at.isoformat(),
                "proration_behavior": proration_behavior,
            },
        )
        if proration_behavior == PRORATE_ALWAYS_INVOICE and change_at != CHANGE_AT_PERIOD_END:
            transaction.on_commit(
                lambda: async_task("invoicing.tasks.invoice_prorations", subscription.pk, at.isoformat())
            )
    usage_rematch_enqueue(
        project=subscription.project, customer_external_ids=[subscription.customer.external_id]
    )
    return subscription


def subscription_override_prices(
    *, subscription: Subscription, overrides: dict[str, Any], actor: Actor
) -> Subscription:
    """Give one subscription its own prices: a private copy of its plan with the base fee and/or
    the charges of the named meters replaced, which the subscription moves to now."""
    unknown = set(overrides) - {"base_fee", "charges"}
    if unknown or not overrides:
        raise InvalidInput(
            "price_overrides takes base_fee and/or charges.",
            code="invalid_overrides",
            param="price_overrides",
        )
    plan = subscription.plan
    charges = [charge_fields(charge) for charge in plan.charges.all()]
    for index, replacement in enumerate(
        clean_charges(
            subscription.project, overrides.get("charges", []), currency_param="price_overrides.charges"
        )
    ):
        slot = next(
            (
                i
                for i, c in enumerate(charges)
                if c["meter"] == replacement["meter"] and c["kind"] == replacement["kind"]
            ),
            None,
        )
        if slot is None and replacement["meter"] is not None:
            raise Unprocessable(
                "The plan has no charge for this meter.",
                code="unknown_charge",
                param=f"price_overrides.charges[{index}].meter",
            )
        if slot is None:
            charges.append(replacement)
        else:
            charges[slot] = replacement
    base_fee = (
        to_decimal(overrides["base_fee"], param="price_overrides.base_fee")
        if "base_fee" in overrides
        else plan.base_fee
    )
    with transaction.atomic():
        if plan.is_private and not plan_has_other_subscriptions(plan, subscription):
            private = plan_update(plan=plan, changes={"base_fee": base_fee, "charges": charges}, actor=actor)
        else:
            private = plan_create(
                project=subscription.project,
                product=plan.product,
                code=f"{plan.code}.{subscription.public_id}",
                name=f"{plan.name} ({subscription.customer})",
                currency=plan.currency,
                interval=plan.interval,
                interval_count=plan.interval_count,
                trial_days=plan.trial_days,
                bill_usage_during_trial=plan.bill_usage_during_trial,
                base_fee=base_fee,
                base_fee_timing=plan.base_fee_timing,
                entitlements=plan.entitlements,
                charges=charges,
                is_private=True,
                actor=actor,
            )
        if private.pk != subscription.plan_id:
            subscription = subscription_change_plan(subscription=subscription, plan=private, actor=actor)
    return subscription


def plan_has_other_subscriptions(plan: Plan, subscription: Subscription) -> bool:
    return SubscriptionPhase.objects.filter(plan=plan).exclude(subscription=subscription).exists()


def subscription_update_terms(
    *, subscription: Subscription, changes: dict[str, Any], actor: Actor
) -> Subscription:
    unknown = set(changes) - TERMS_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.", code="unknown_field")
    with transaction.atomic():
        subscription = _locked(subscription)
        if subscription.status in (Status.CANCELED, Status.ENDED):
            raise _refuse(subscription, "update", f"A {subscription.status} subscription cannot change.")
        if "ends_at" in changes:
            ends_at = changes["ends_at"] and _in_range(changes["ends_at"], param="ends_at")
            if ends_at is not None and ends_at <= max(timezone.now(), subscription.starts_at):
                raise Unprocessable(
                    "ends_at must be in the future and after the start.",
                    code="ends_before_start",
                    param="ends_at",
                )
            if subscription.phases.filter(starts_at__gt=timezone.now()).exists() and ends_at is not None:
                _drop_future_phases(subscription, after=ends_at)
            last = subscription.phases.order_by("-starts_at").first()
            last.ends_at = ends_at
            last.save(update_fields=["ends_at"])
            subscription.cancel_at_period_end = False
        if "metadata" in changes and not isinstance(changes["metadata"], dict):
            raise InvalidInput("Metadata is an object.", code="invalid_metadata", param="metadata")
        audit = {name: [str(getattr(subscription, name)), str(value)] for name, value in changes.items()}
        for name, value in changes.items():
            setattr(subscription, name, value)
        subscription.save()
        _record(subscription, "subscription.updated", actor=actor, changes=audit)
    return subscription


def subscription_update(*, subscription: Subscription, changes: dict[str, Any], actor: Actor) -> Subscription:
    """A PATCH: terms (ends_at, external_reference, metadata, payment_terms_days) and at most one
    change (status, cancel_at_period_end, plan with effective_at and proration_behavior, or
    price_overrides), all in one
    transaction: if the change is refused, the terms are not changed either."""
    changes = dict(changes)
    status = changes.pop("status", None)
    cancel_at_period_end = changes.pop("cancel_at_period_end", None)
    plan = changes.pop("plan", None)
    change_at = changes.pop("effective_at", CHANGE_NOW)
    proration_behavior = changes.pop("proration_behavior", PRORATE)
    overrides = changes.pop("price_overrides", None)
    with transaction.atomic():
        if changes:
            subscription = subscription_update_terms(subscription=subscription, changes=changes, actor=actor)
        if status == Status.PAUSED:
            subscription = subscription_pause(subscription=subscription, actor=actor)
        elif status == Status.ACTIVE:
            subscription = subscription_resume(subscription=subscription, actor=actor)
        elif status == Status.CANCELED:
            subscription = subscription_cancel(
                subscription=subscription, at_period_end=bool(cancel_at_period_end), actor=actor
            )
        elif cancel_at_period_end is False:
            subscription = subscription_uncancel(subscription=subscription, actor=actor)
        elif plan is not None:
            subscription = subscription_change_plan(
                subscription=subscription,
                plan=plan,
                change_at=change_at,
                proration_behavior=proration_behavior,
                actor=actor,
            )
        elif overrides is not None:
            subscription = subscription_override_prices(
                subscription=subscription, overrides=overrides, actor=actor
            )
    return subscription


def current_period(subscription: Subscription) -> Period:
    return Period(start=subscription.current_period_start, end=subscription.current_period_end)
