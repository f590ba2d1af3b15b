"""What an invoice contains, and the period close that issues it.

A subscription is billed at billing points: when it starts (the opening invoice: the first
period's fees in advance) and at the end of each period (a cycle invoice). A cycle invoice closing
period P = [start, end) carries:

1. P's fees billed in arrears (base fee, fixed charges), prorated by the time P's phases were
   active and out of trial;
2. a true-up of P's fees billed in advance: what P's phases say they should have been minus what
   the invoice issued at P's start billed (a plan change, pause or cancellation during P prorates
   this way; a credit when too much was billed);
3. P's usage, rated per contiguous run of one plan (a plan change rates usage before and after it
   on each plan; a pause keeps one run, and events during it are not matched anyway);
4. late usage: for periods already invoiced, what their usage adds up to now minus what their
   invoices billed, priced as the difference on the period's own plan;
5. the next period's fees in advance, if the subscription goes on.

Every amount comes from invoicing/rating.py and is rounded once per line; the total is the sum of
the lines. Lines are recomputed while an invoice is a draft or in review (manual adjustments are
kept) and frozen when it is issued.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Prefetch, Q
from django.utils import timezone

from accounts.models import InvoiceDelivery
from billing_site.aggregates import MoneySum
from billing_site.errors import Unprocessable
from billing_site.money import round_money
from catalog.models import Charge, Plan
from catalog.pricing import ChargeKind, FeeTiming, PricingModel
from invoicing import services
from invoicing.composition import invoice_lines_compose, invoice_totals_set, waterfall_for
from invoicing.lines import LineDraft
from invoicing.models import (
    EDITABLE_STATUSES,
    ISSUED_STATUSES,
    MAX_AMOUNT,
    MAX_QUANTITY,
    BillingReason,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineType,
)
from invoicing.rating import Pricing, Rating, rate_dynamic, rate_fixed, rate_percentage, rate_usage
from meters.selectors import dynamic_amount, late_event_span, meter_quantity, percentage_usage
from subscriptions.models import Subscription, SubscriptionPhase
from subscriptions.periods import Period
from subscriptions.selectors import nominal_period, plan_at, subscription_phases
from subscriptions.services import CLOCK_SKEW, period_grid

logger = logging.getLogger(__name__)

# An event inserted while a period was being closed may have missed its final rating; the period
# just closed is re-checked for such usage for this long after its invoice was issued. After that,
# usage of closed periods is found through the events matched late (see late_usage_periods).
RACE_WINDOW = timedelta(days=1)
FEE_TYPES = (LineType.BASE_FEE, LineType.FIXED_FEE)


@dataclass(frozen=True)
class Segment:
    plan: Plan  # rates the usage
    start: datetime
    end: datetime
    paused: bool
    # Whose fixed fees accrue: the plan, or the previous one after a change made without
    # proration, until the end of the period the change fell in (SubscriptionPhase.prorate).
    fee_plan: Plan | None = None

    @property
    def fees_of(self) -> Plan:
        return self.fee_plan or self.plan

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


# --- phases as segments of a period ------------------------------------------------------------


def billing_subscriptions_locked(pks: Iterable[int], *, skip_locked: bool = False) -> list[Subscription]:
    """Lock subscriptions for billing, in pk order, with everything rating reads about them loaded
    at once: their phases, their plans, the plans' charges and meters, and whether the opening
    invoice exists (`has_opening`). Rating a period then costs the usage queries and little else;
    the prefetch is as fresh as the lock, which every phase change takes.

    The subscription and its customer are locked (a customer is not deleted under its close), not
    the project: every subscription of the project would look taken to a concurrent close.
    `skip_locked` leaves out the ones another transaction holds (where the database can:
    PostgreSQL; SQLite has one writer and no row locks).
    """
    charges = Prefetch("plan__charges", queryset=Charge.objects.select_related("meter"))
    phases = SubscriptionPhase.objects.select_related("plan").prefetch_related(charges)
    skip = skip_locked and connection.features.has_select_for_update_skip_locked
    locked = list(
        Subscription.objects.select_for_update(of=("self", "customer"), skip_locked=skip)
        .select_related("plan", "project", "customer")
        .prefetch_related(Prefetch("phases", queryset=phases))
        .filter(pk__in=list(pks))
        .order_by("pk")
    )
    # Read after the lock, not in its statement: a lock that waited returns the rows as the
    # holder committed them, but a subquery of that statement sees the invoices as they were.
    opened = set(
        Invoice.objects.filter(
            subscription__in=locked, billing_reason=BillingReason.SUBSCRIPTION_START
        ).values_list("subscription_id", flat=True)
    )
    for subscription in locked:
        subscription.has_opening = subscription.pk in opened
    return locked


def billing_subscription_locked(pk: int) -> Subscription:
    """One subscription locked for billing (billing_subscriptions_locked); DoesNotExist if gone."""
    found = billing_subscriptions_locked([pk])
    if not found:
        raise Subscription.DoesNotExist(f"No subscription {pk}")
    return found[0]


def segments(subscription: Subscription, start: datetime, end: datetime) -> list[Segment]:
    """The subscription's phases clipped to [start, end) and to its billed life (from
    `billed_from`). [start, end) is a billing period: a phase opened in it by a change without
    proration keeps the previous phase's fees throughout it."""
    life_end = subscription.ends_at or end
    period_start = start
    start, end = max(start, subscription.billed_from), min(end, life_end)
    found = []
    fees_of = None
    for phase in subscription_phases(subscription):
        if phase.prorate or fees_of is None or phase.starts_at <= period_start:
            fees_of = phase.plan
        seg_start, seg_end = max(phase.starts_at, start), min(phase.ends_at or end, end)
        if seg_start < seg_end:
            found.append(Segment(phase.plan, seg_start, seg_end, phase.paused, fee_plan=fees_of))
    return found


def _billable_time(segment: Segment, subscription: Subscription) -> timedelta:
    """How long a segment accrues fees: not while paused, not during the trial."""
    if segment.paused:
        return timedelta(0)
    trial_end = subscription.trial_ends_at
    start = max(segment.start, trial_end) if trial_end else segment.start
    return max(segment.end - start, timedelta(0))


def _fees(plan: Plan, timing: str) -> list[tuple[Charge | None, Decimal, str]]:
    """A plan's fixed fees with the given timing: (charge, amount, line type); None is the base fee."""
    fees = []
    if plan.base_fee and plan.base_fee_timing == timing:
        fees.append((None, plan.base_fee, LineType.BASE_FEE))
    for charge in plan.charges.all():
        if charge.kind == ChargeKind.FIXED and charge.timing == timing and charge.unit_price:
            fees.append((charge, charge.unit_price, LineType.FIXED_FEE))
    return fees


def _fee_name(plan: Plan, charge: Charge | None) -> str:
    return f"{plan.name} — {charge.name or 'fixed fee'}" if charge else f"{plan.name} — base fee"


def fee_lines(
    subscription: Subscription,
    period: Period,
    timing: str,
    *,
    currency: str,
    spans: list[Segment] | None = None,
) -> list[LineDraft]:
    """The period's fees of one timing, prorated by the time each plan was billable in it.

    A fixed charge with `prorate` off bills its full fee for any billable time in the period (the
    plan's base fee is always prorated). `spans` defaults to the subscription's phases in the period
    (a preview passes others).
    """
    covered: dict[tuple[int, int | None], timedelta] = defaultdict(timedelta)
    fees: dict[tuple[int, int | None], tuple[Plan, Charge | None, Decimal, str]] = {}
    for segment in segments(subscription, period.start, period.end) if spans is None else spans:
        time = _billable_time(segment, subscription)
        for charge, amount, line_type in _fees(segment.fees_of, timing):
            key = (segment.fees_of.pk, charge.pk if charge else None)
            covered[key] += time
            fees[key] = (segment.fees_of, charge, amount, line_type)
    lines = []
    for key, (plan, charge, amount, line_type) in fees.items():
        if not covered[key]:
            continue
        length = period.end - period.start
        # Not prorated: any billable time in the period counts as all of it.
        time = length if charge is not None and not charge.prorate else covered[key]
        rating = rate_fixed(amount, covered=time, period=length, currency=currency)
        lines.append(
            LineDraft(
                type=line_type,
                description=_fee_name(plan, charge),
                period_start=period.start,
                period_end=period.end,
                amount=rating.amount,
                unit_price=amount,
                plan=plan,
                charge=charge,
                quantity=_fraction(time, period),
            )
        )
    return lines


def _fraction(covered: timedelta, period: Period) -> Decimal:
    """The share of the period billed, to 6 places, shown as the line's quantity."""
    whole = (period.end - period.start) // timedelta(microseconds=1)
    part = covered // timedelta(microseconds=1)
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.000001")) if whole else Decimal(0)


def _advance_true_up(subscription: Subscription, period: Period, invoice: Invoice) -> list[LineDraft]:
    """What the period's advance fees should have been, minus what was billed for them up front."""
    should = {
        (line.plan.pk, line.charge.pk if line.charge else None): line
        for line in fee_lines(subscription, period, FeeTiming.IN_ADVANCE, currency=invoice.currency)
    }
    # Billed so far: the fees and the proration credits of this period on other invoices (the
    # opening or previous cycle invoice, and any invoiced at once at a plan change), not the
    # draft that will close this period: its true-up is what is still to bill.
    billed_rows = (
        InvoiceLine.objects.filter(
            invoice__subscription=subscription,
            type__in=(*FEE_TYPES, LineType.CREDIT),
            original_invoice__isnull=True,
            period_start=period.start,
            period_end=period.end,
            is_manual=False,
        )
        .exclude(invoice__status=InvoiceStatus.VOID)
        .exclude(invoice_id=invoice.pk)
        .exclude(
            invoice__billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
            invoice__status__in=EDITABLE_STATUSES,
            invoice__period_start__gte=period.start,
        )
        .filter(
            Q(charge__isnull=True, plan__base_fee_timing=FeeTiming.IN_ADVANCE)
            | Q(charge__timing=FeeTiming.IN_ADVANCE)
        )
        .values("plan", "charge")
        .annotate(total=MoneySum("amount"))
    )
    billed = {(row["plan"], row["charge"]): row["total"] for row in billed_rows}
    lines = []
    for key in sorted(set(should) | set(billed), key=lambda k: (k[0], k[1] or 0)):
        target = should[key].amount if key in should else Decimal(0)
        difference = target - billed.get(key, Decimal(0))
        if not difference:
            continue
        plan = should[key].plan if key in should else Plan.objects.get(pk=key[0])
        charge = should[key].charge if key in should else (Charge.objects.get(pk=key[1]) if key[1] else None)
        name = _fee_name(plan, charge)
        lines.append(
            LineDraft(
                type=LineType.CREDIT
                if difference < 0
                else (LineType.FIXED_FEE if charge else LineType.BASE_FEE),
                description=f"{name}: {'unused' if difference < 0 else 'added'} time (proration)",
                period_start=period.start,
                period_end=period.end,
                amount=difference,
                plan=plan,
                charge=charge,
            )
        )
    return lines


# --- usage ----------------------------------------------------------------------------------------


def _runs(spans: list[Segment]) -> list[tuple[Plan, datetime, datetime]]:
    """Contiguous spans on one plan (a pause does not split a run)."""
    runs: list[list] = []
    for segment in spans:
        if runs and runs[-1][0].pk == segment.plan.pk and runs[-1][2] == segment.start:
            runs[-1][2] = segment.end
        else:
            runs.append([segment.plan, segment.start, segment.end])
    return [(plan, start, end) for plan, start, end in runs]


def rate_charge(
    charge: Charge, subscription: Subscription, start: datetime, end: datetime, *, currency: str
) -> Rating:
    """A usage charge's rating for what the subscription used of its meter over [start, end)."""
    pricing = Pricing.from_item(charge)
    if charge.pricing_model == PricingModel.DYNAMIC:
        quantity = meter_quantity(meter=charge.meter, subscription=subscription, start=start, end=end)
        amount = dynamic_amount(
            meter=charge.meter,
            subscription=subscription,
            start=start,
            end=end,
            property=pricing.amount_property,
        )
        return rate_dynamic(pricing, quantity=quantity, amount=amount, currency=currency)
    if charge.pricing_model == PricingModel.PERCENTAGE:
        usage = percentage_usage(
            meter=charge.meter, subscription=subscription, start=start, end=end, pricing=pricing
        )
        return rate_percentage(
            pricing, fees=usage.fees, events=usage.events, total_value=usage.total_value, currency=currency
        )
    quantity = meter_quantity(meter=charge.meter, subscription=subscription, start=start, end=end)
    return rate_usage(pricing, quantity, currency=currency)


def _tiers(rating: Rating) -> list[dict]:
    return [
        {
            "tier": t.tier,
            "units": str(t.units),
            "unit_price": str(t.unit_price),
            "flat_fee": str(t.flat_fee),
            "amount": str(t.amount),
        }
        for t in rating.tiers
    ]


def usage_lines(
    subscription: Subscription, period: Period, *, currency: str, spans: list[Segment] | None = None
) -> list[LineDraft]:
    lines = []
    spans = segments(subscription, period.start, period.end) if spans is None else spans
    for plan, start, end in _runs(spans):
        if not plan.bill_usage_during_trial and subscription.trial_ends_at:
            start = min(max(start, subscription.trial_ends_at), end)
        for charge in plan.charges.all():
            if charge.kind != ChargeKind.USAGE:
                continue
            rating = rate_charge(charge, subscription, start, end, currency=currency)
            used = usage_amount(rating, currency)
            lines.append(
                LineDraft(
                    type=LineType.USAGE,
                    description=str(charge),
                    period_start=start,
                    period_end=end,
                    amount=used,
                    quantity=rating.quantity,
                    unit_price=rating.unit_price,
                    plan=plan,
                    charge=charge,
                    tiers=_tiers(rating),
                    cumulative_quantity=rating.quantity,
                )
            )
            if rating.amount > used:
                lines.append(
                    LineDraft(
                        type=LineType.MINIMUM,
                        description=f"{charge} — minimum {rating.amount:,} {currency} (true-up)",
                        period_start=start,
                        period_end=end,
                        amount=rating.amount - used,
                        plan=plan,
                        charge=charge,
                    )
                )
    return lines


def usage_amount(rating: Rating, currency: str) -> Decimal:
    """What the usage itself came to: the line amount before the charge's minimum raised it
    (the rest is a minimum true-up line of its own)."""
    return (
        max(round_money(rating.exact_amount, currency), Decimal(0))
        if rating.minimum_applied
        else rating.amount
    )


def commitment_lines(
    subscription: Subscription,
    nominal: Period,
    lines: list[LineDraft],
    *,
    invoice: Invoice | None,
    currency: str,
    spans: list[Segment] | None = None,
) -> list[LineDraft]:
    """A plan's minimum commitment for the period: what the period's fees and usage on the plan
    (on this invoice and, for fees billed in advance, on the earlier one) fall short of it,
    prorated by the time the plan was billable in the period. Without an `invoice` (a preview
    pricing a whole period afresh) only `lines` count; `spans` as for fee_lines."""
    covered: dict[int, timedelta] = defaultdict(timedelta)
    plans: dict[int, Plan] = {}
    for segment in segments(subscription, nominal.start, nominal.end) if spans is None else spans:
        if segment.fees_of.minimum_commitment > 0:
            covered[segment.fees_of.pk] += _billable_time(segment, subscription)
            plans[segment.fees_of.pk] = segment.fees_of
    found = []
    for plan_id, time in covered.items():
        if not time:
            continue
        plan = plans[plan_id]
        committed = rate_fixed(
            plan.minimum_commitment, covered=time, period=nominal.end - nominal.start, currency=currency
        ).amount
        billed = sum(
            (
                line.amount
                for line in lines
                if line.plan_id == plan_id
                and line.period_start >= nominal.start
                and line.period_end <= nominal.end
                and line.original_invoice is None
            ),
            Decimal(0),
        )
        if invoice is not None:
            billed += InvoiceLine.objects.filter(
                invoice__subscription=subscription,
                plan_id=plan_id,
                period_start__gte=nominal.start,
                period_end__lte=nominal.end,
                original_invoice__isnull=True,
                is_manual=False,
                type__in=(*FEE_TYPES, LineType.CREDIT, LineType.USAGE, LineType.MINIMUM),
            ).exclude(invoice__status=InvoiceStatus.VOID).exclude(invoice_id=invoice.pk).aggregate(
                total=MoneySum("amount")
            )["total"] or Decimal(0)
        if committed > billed:
            found.append(
                LineDraft(
                    type=LineType.COMMITMENT,
                    description=f"{plan.name} — minimum commitment {committed:,} {currency} (true-up)",
                    period_start=nominal.start,
                    period_end=nominal.end,
                    amount=committed - billed,
                    unit_price=committed,
                    plan=plan,
                )
            )
    return found


# What counts towards a commitment: the period's fees and usage, as billed and as corrected late.
COMMITTED_TYPES = (*FEE_TYPES, LineType.CREDIT, LineType.USAGE, LineType.MINIMUM, LineType.LATE_USAGE)


def commitment_late_adjustments(
    subscription: Subscription, late: list[LineDraft], *, invoice: Invoice
) -> list[LineDraft]:
    """Late usage of a period its plan's commitment was trued up for: the true-up as it stands now
    minus what was billed for it, so that late usage fills the commitment before it costs more
    (and a late credit takes the period back up to it). Each period on its own: a catch-up invoice
    trues up several."""
    periods: dict[int, tuple[InvoiceLine, list[LineDraft]]] = {}
    for line in late:
        if not (line.plan and line.original_invoice):
            continue
        trued = InvoiceLine.objects.filter(
            invoice_id=line.original_invoice.pk,
            original_invoice__isnull=True,
            type=LineType.COMMITMENT,
            plan_id=line.plan.pk,
            period_start__lte=line.period_start,
            period_end__gte=line.period_end,
        ).first()
        if trued is not None:
            periods.setdefault(trued.pk, (trued, []))[1].append(line)
    found = []
    for trued, lines in periods.values():
        of_period = (
            InvoiceLine.objects.filter(
                invoice__subscription=subscription,
                plan_id=trued.plan_id,
                period_start__gte=trued.period_start,
                period_end__lte=trued.period_end,
            )
            .exclude(invoice__status=InvoiceStatus.VOID)
            .exclude(invoice_id=invoice.pk)
        )
        trued_up = of_period.filter(type=LineType.COMMITMENT).filter(
            Q(pk=trued.pk) | Q(original_invoice_id=trued.invoice_id)
        ).aggregate(total=MoneySum("amount"))["total"] or Decimal(0)
        billed = of_period.filter(is_manual=False, type__in=COMMITTED_TYPES).aggregate(
            total=MoneySum("amount")
        )["total"] or Decimal(0)
        billed += sum((line.amount for line in lines), Decimal(0))
        difference = max(trued.unit_price - billed, Decimal(0)) - trued_up
        if difference:
            sample = lines[0]
            label = _period_label(Period(trued.period_start, trued.period_end))
            found.append(
                LineDraft(
                    type=LineType.COMMITMENT,
                    description=f"{sample.plan.name} — minimum commitment for {label}, with its late usage",
                    period_start=trued.period_start,
                    period_end=trued.period_end,
                    amount=difference,
                    unit_price=trued.unit_price,
                    plan=sample.plan,
                    original_invoice=sample.original_invoice,
                )
            )
    return found


def late_usage_lines(
    subscription: Subscription, before: datetime, *, invoice: Invoice, now: datetime
) -> list[LineDraft]:
    """Usage of periods already invoiced that their invoices did not bill: for each usage line of
    such an invoice, the period's usage rated now minus what was billed for it so far (the line
    and any late-usage lines since), on the period's own plan."""
    candidates = late_usage_invoices(subscription, before=before, now=now)
    if not candidates:
        return []
    earlier_late = (
        InvoiceLine.objects.filter(
            original_invoice__in=candidates, type__in=(LineType.LATE_USAGE, LineType.CREDIT)
        )
        .exclude(invoice__status=InvoiceStatus.VOID)
        .exclude(invoice_id=invoice.pk)
        .values("original_invoice", "charge")
        .annotate(cumulative=Max("cumulative_quantity"), amount=MoneySum("amount"))
    )
    billed_late = {(row["original_invoice"], row["charge"]): row for row in earlier_late}
    minimums = {
        (row["invoice"], row["charge"], row["period_start"]): row["amount"]
        for row in InvoiceLine.objects.filter(invoice__in=candidates, type=LineType.MINIMUM)
        .values("invoice", "charge", "period_start")
        .annotate(amount=MoneySum("amount"))
        .order_by()
    }
    usage = InvoiceLine.objects.filter(invoice__in=candidates, type=LineType.USAGE).select_related(
        "charge__meter", "plan", "invoice"
    )
    lines = []
    for original in usage.order_by("invoice__period_start", "position"):
        charge = original.charge
        late = billed_late.get((original.invoice_id, charge.pk))
        billed_quantity = late["cumulative"] if late else original.cumulative_quantity
        billed_amount = (
            original.amount
            + minimums.get((original.invoice_id, charge.pk, original.period_start), 0)
            + (late["amount"] if late else 0)
        )
        current = rate_charge(
            charge,
            subscription,
            original.period_start,
            original.period_end,
            currency=original.invoice.currency,
        )
        difference = current.amount - billed_amount
        if current.quantity == billed_quantity and not difference:
            continue
        label = _period_label(Period(original.period_start, original.period_end))
        lines.append(
            LineDraft(
                type=LineType.CREDIT if difference < 0 else LineType.LATE_USAGE,
                description=f"{charge} — late usage for {label}",
                period_start=original.period_start,
                period_end=original.period_end,
                amount=difference,
                quantity=current.quantity - billed_quantity,
                unit_price=current.unit_price,
                plan=original.plan,
                charge=charge,
                tiers=_tiers(current),
                cumulative_quantity=current.quantity,
                original_invoice=original.invoice,
            )
        )
    return lines


def late_usage_invoices(subscription: Subscription, *, before: datetime, now: datetime) -> list[Invoice]:
    """The issued cycle invoices of periods before `before` that may miss usage: the one issued
    within RACE_WINDOW (usage inserted while it was closed), and those whose periods received
    events matched after the period ended."""
    issued = Invoice.objects.filter(
        subscription=subscription,
        billing_reason__in=(BillingReason.SUBSCRIPTION_CYCLE, BillingReason.SUBSCRIPTION_START),
        status__in=ISSUED_STATUSES,
        period_end__lte=before,
    )
    recent = issued.filter(issued_at__gte=now - RACE_WINDOW)
    span = late_event_span(subscription=subscription, before=before)
    if span is not None:
        first, last = span
        recent = recent | issued.filter(period_end__gt=first, period_start__lte=last)
    return list(recent.distinct().order_by("period_start"))


# --- putting an invoice together ----------------------------------------------------------------


def compute_lines(invoice: Invoice, *, now: datetime | None = None) -> list[LineDraft]:
    """The computed lines of an invoice, from the subscription's phases and usage as they are now."""
    now = now or timezone.now()
    subscription = invoice.subscription
    currency = invoice.currency
    period = Period(start=invoice.period_start, end=invoice.period_end)
    if invoice.billing_reason == BillingReason.SUBSCRIPTION_START:
        if period.start < period.end:
            return lines_in_bounds(catch_up_lines(subscription, period, currency=currency))
        first = nominal_period(subscription, subscription.billed_from)
        return fee_lines(subscription, first, FeeTiming.IN_ADVANCE, currency=currency)
    if invoice.billing_reason == BillingReason.SUBSCRIPTION_UPDATE:
        return _advance_true_up(subscription, nominal_period(subscription, period.start), invoice)
    nominal = nominal_period(subscription, period.start)
    lines = [
        *fee_lines(subscription, nominal, FeeTiming.IN_ARREARS, currency=currency),
        *_advance_true_up(subscription, nominal, invoice),
        *usage_lines(subscription, period, currency=currency),
    ]
    late = late_usage_lines(subscription, period.start, invoice=invoice, now=now)
    lines += late + commitment_late_adjustments(subscription, late, invoice=invoice)
    lines += commitment_lines(subscription, nominal, lines, invoice=invoice, currency=currency)
    if subscription.ends_at is None or subscription.ends_at > period.end:
        following = nominal_period(subscription, nominal.end)
        lines += fee_lines(subscription, following, FeeTiming.IN_ADVANCE, currency=currency)
    return lines_in_bounds(lines)


def catch_up_lines(subscription: Subscription, window: Period, *, currency: str) -> list[LineDraft]:
    """A backdated subscription's opening invoice: for each period of [window.start, window.end)
    (the time before the period it was created in), its fees, in advance and in arrears, its
    usage and its commitment's true-up, each line naming its period; then the first current
    period's fees in advance."""
    lines = []
    moment = window.start
    while moment < window.end:
        nominal = nominal_period(subscription, moment)
        period = Period(start=moment, end=min(nominal.end, window.end))
        label = f" ({_period_label(period)})"
        billed = [
            *fee_lines(subscription, nominal, FeeTiming.IN_ADVANCE, currency=currency),
            *fee_lines(subscription, nominal, FeeTiming.IN_ARREARS, currency=currency),
            *usage_lines(subscription, period, currency=currency),
        ]
        billed += commitment_lines(subscription, nominal, billed, invoice=None, currency=currency)
        for line in billed:
            line.description += label
            lines.append(line)
        moment = period.end
    if subscription.ends_at is None or subscription.ends_at > window.end:
        following = nominal_period(subscription, window.end)
        lines += fee_lines(subscription, following, FeeTiming.IN_ADVANCE, currency=currency)
    return lines


def _period_label(period: Period) -> str:
    return f"{period.start:%Y-%m-%d} – {period.end:%Y-%m-%d}"


def lines_in_bounds(lines: list[LineDraft]) -> list[LineDraft]:
    """The lines, if an invoice can hold them: each amount and the total below MAX_AMOUNT (10^16
    in the currency's major unit), each quantity below MAX_QUANTITY. Usage and prices are bounded
    one by one, but their product need not be; such an invoice is refused (422 to a preview, a
    failure the close reports for the subscription) rather than stored wrong or not at all."""
    total = lines_total(lines)
    for line in lines:
        if abs(line.amount) >= MAX_AMOUNT or abs(line.quantity) >= MAX_QUANTITY:
            raise Unprocessable(
                f"The line '{line.description}' comes to more than an invoice can hold "
                f"(amounts below {MAX_AMOUNT:,}, quantities below {MAX_QUANTITY:,}).",
                code="amount_too_large",
            )
    if abs(total) >= MAX_AMOUNT:
        raise Unprocessable(
            f"The invoice comes to more than it can hold (below {MAX_AMOUNT:,}).", code="amount_too_large"
        )
    return lines


def invoice_rebuild(*, invoice: Invoice, now: datetime | None = None, lock: bool = False) -> Invoice:
    """Recompute an editable invoice's lines (manual adjustments stay), its waterfall and totals.
    `lock` composes the waterfall with the coupons and the wallet locked, as issuing needs.

    Runs in the caller's transaction, with the invoice locked by the caller.
    """
    if invoice.status not in EDITABLE_STATUSES:
        raise ValueError(f"a {invoice.status} invoice is frozen")
    invoice.lines.filter(is_manual=False).delete()  # the waterfall lines too: none are manual
    drafts = compute_lines(invoice, now=now)
    return invoice_lines_compose(
        invoice=invoice,
        stored=list(invoice.lines.all()),
        new=[draft.to_line(invoice, position) for position, draft in enumerate(drafts)],
        lock=lock,
        at=now,
    )


def _invoice_for(subscription: Subscription, *, reason: str, period: Period) -> tuple[Invoice, bool]:
    """The subscription's invoice for a billing point, created as a draft if missing.

    The unique constraints decide between two racing creators: the loser reads the winner's row.
    """
    lookup = {"subscription": subscription, "billing_reason": reason}
    if reason != BillingReason.SUBSCRIPTION_START:
        lookup["period_start"] = period.start
    existing = Invoice.objects.select_for_update().filter(**lookup).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                project=subscription.project,
                customer=subscription.customer,
                currency=subscription.plan.currency,
                period_end=period.end,
                **{"period_start": period.start, **lookup},
            )
    except IntegrityError:
        return Invoice.objects.select_for_update().get(**lookup), False
    return invoice, True


# --- the period close and draft refresh ---------------------------------------------------------


@dataclass
class CloseResult:
    periods_closed: int = 0
    finalized: int = 0
    queued_for_review: int = 0
    opened: int = 0

    def add(self, other: "CloseResult") -> None:
        for name in ("periods_closed", "finalized", "queued_for_review", "opened"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _close_invoice(invoice: Invoice, *, created: bool, result: CloseResult) -> None:
    """Rebuild the invoice, then issue it (auto-send) or hold it for review, as the customer or
    project says. Its waterfall is composed once: under lock when it is issued now (what it
    takes from coupons and credits is what they still hold), without when it goes to review
    (approval recomposes it)."""
    review = services.invoice_delivery_for(invoice) == InvoiceDelivery.REVIEW
    now = timezone.now()
    composed = _recompute(invoice, created=created, now=now, lock=not review)
    if review:
        services.invoice_submit_for_review(invoice=invoice, actor=None)
        result.queued_for_review += 1
    else:
        services.invoice_issue_composed(invoice=invoice, actor=None, now=now, composed=composed)
        result.finalized += 1


def _billing_end(subscription: Subscription) -> datetime:
    """When the current period's billing ends: its end, or the subscription's end if earlier."""
    if subscription.ends_at is not None:
        return min(subscription.current_period_end, subscription.ends_at)
    return subscription.current_period_end


def subscription_is_done(subscription: Subscription) -> bool:
    return subscription.current_period_start >= subscription.current_period_end


def subscription_close_periods(
    *, subscription: Subscription, as_of: datetime, grace: timedelta
) -> CloseResult:
    """Bill everything due for one subscription up to `as_of`: the close of a batch of one (see
    billing_close), in one transaction."""
    with transaction.atomic():
        return _close_locked(billing_subscription_locked(subscription.pk), as_of=as_of, grace=grace)


def _close_locked(locked: Subscription, *, as_of: datetime, grace: timedelta) -> CloseResult:
    """Bill everything due for a subscription locked by billing_subscriptions_locked: the opening
    invoice once it has started, then each period that ended before `as_of - grace`.

    Safe to run twice, concurrently and after a crash: the caller holds the subscription's lock,
    its state is re-read under it, and each invoice is written together with the subscription's
    advance to its next period. Each step is a savepoint: a failing step leaves the earlier ones.
    """
    result = CloseResult()
    while True:
        with transaction.atomic():
            if locked.starts_at > as_of:
                return result
            step = CloseResult()
            if not locked.has_opening:
                opening = Period(locked.billed_from, locked.catch_up_until or locked.billed_from)
                invoice, created = _invoice_for(
                    locked, reason=BillingReason.SUBSCRIPTION_START, period=opening
                )
                _close_invoice(invoice, created=created, result=step)
                step.opened += 1
                # A failing step rolls back and the caller drops the subscription: no stale flag.
                locked.has_opening = True
            if subscription_is_done(locked) or _billing_end(locked) + grace > as_of:
                result.add(step)
                return result
            period = Period(start=locked.current_period_start, end=_billing_end(locked))
            if period.start >= period.end:  # canceled as it began: nothing was used
                _advance(locked)
                result.add(step)
                continue
            invoice, created = _invoice_for(locked, reason=BillingReason.SUBSCRIPTION_CYCLE, period=period)
            if invoice.status == InvoiceStatus.DRAFT:
                invoice.period_end = period.end
                _close_invoice(invoice, created=created, result=step)
            step.periods_closed += 1
            _advance(locked)
        result.add(step)
        if subscription_is_done(locked) or _billing_end(locked) + grace > as_of:
            return result  # nothing more due


def _advance(subscription: Subscription) -> None:
    """Move the subscription to its next period, taking up a plan change scheduled for it; after
    its last period, its current period becomes empty (nothing more to bill)."""
    end = _billing_end(subscription)
    if subscription.ends_at is not None and subscription.ends_at <= subscription.current_period_end:
        subscription.current_period_start = subscription.current_period_end = end
    else:
        following = period_grid(subscription).period_after(
            Period(start=subscription.current_period_start, end=subscription.current_period_end)
        )
        subscription.current_period_start, subscription.current_period_end = following.start, following.end
        subscription.plan = plan_at(subscription, following.start) or subscription.plan
    subscription.save(update_fields=["current_period_start", "current_period_end", "plan", "updated_at"])


def draft_refresh(*, subscription: Subscription, now: datetime | None = None) -> Invoice | None:
    """Create or recompute the draft of the subscription's current period (its upcoming invoice)."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = billing_subscription_locked(subscription.pk)
        if locked.starts_at > now or subscription_is_done(locked):
            return None
        period = Period(start=locked.current_period_start, end=_billing_end(locked))
        invoice, created = _invoice_for(locked, reason=BillingReason.SUBSCRIPTION_CYCLE, period=period)
        if invoice.status not in EDITABLE_STATUSES:
            return None
        invoice.period_end = period.end
        _recompute(invoice, created=created, now=now)
    return invoice


def _recompute(
    invoice: Invoice, *, created: bool, now: datetime | None = None, lock: bool = False
) -> dict | None:
    """Rebuild the invoice and announce it: invoice.created when new, invoice.updated when its
    total moved (usage arrived), nothing when it did not. `lock` as for invoice_rebuild. Returns
    the payload announced, if any."""
    previous_total = invoice.total
    invoice_rebuild(invoice=invoice, now=now, lock=lock)
    if created:
        return services.invoice_record(invoice, "invoice.created")
    if invoice.total != previous_total:
        return services.invoice_record(invoice, "invoice.updated")
    return None


def invoice_preview(
    *,
    subscription: Subscription,
    plan: Plan | None = None,
    period: Period | None = None,
    now: datetime | None = None,
) -> Invoice:
    """What a period costs the subscription, computed now and saved nowhere. The unsaved invoice
    carries its lines in `preview_lines`.

    For the current period (no `period`, or the current one) on the subscription's own plans,
    it is the invoice that closing the period now would issue, line for line: compute_lines
    over the period's draft (its manual adjustments included), or over an unsaved invoice for
    the period when there is no draft. Otherwise (a past period, or `plan`: as if the whole
    period had been on that plan) it prices the period's fees and usage afresh.
    """
    current = Period(start=subscription.current_period_start, end=_billing_end(subscription))
    period = period or current
    if plan is None and period.start == current.start:
        return _upcoming_invoice(subscription, current, now=now)
    spans = segments(subscription, period.start, period.end)
    if plan is not None:
        life = (
            max(period.start, subscription.billed_from),
            min(period.end, subscription.ends_at or period.end),
        )
        spans = [Segment(plan, *life, paused=False)] if life[0] < life[1] else []
    currency = (plan or subscription.plan).currency
    nominal = nominal_period(subscription, period.start)
    lines = [
        *fee_lines(subscription, nominal, FeeTiming.IN_ADVANCE, currency=currency, spans=spans),
        *fee_lines(subscription, nominal, FeeTiming.IN_ARREARS, currency=currency, spans=spans),
        *usage_lines(subscription, period, currency=currency, spans=spans),
    ]
    lines += commitment_lines(subscription, nominal, lines, invoice=None, currency=currency, spans=spans)
    return _preview(subscription, period, currency, lines_in_bounds(lines))


def _upcoming_invoice(subscription: Subscription, period: Period, *, now: datetime | None) -> Invoice:
    draft = Invoice.objects.filter(
        subscription=subscription,
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
        period_start=period.start,
        status__in=EDITABLE_STATUSES,
    ).first()
    invoice = draft or Invoice(
        project=subscription.project,
        customer=subscription.customer,
        subscription=subscription,
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
        currency=subscription.plan.currency,
    )
    invoice.period_start, invoice.period_end = period.start, period.end
    lines = compute_lines(invoice, now=now)
    if draft is not None:
        lines += [
            LineDraft(
                type=line.type,
                description=line.description,
                period_start=line.period_start,
                period_end=line.period_end,
                amount=line.amount,
                quantity=line.quantity,
                unit_price=line.unit_price,
            )
            for line in draft.lines.filter(is_manual=True).order_by("position")
        ]
    return _preview(subscription, period, invoice.currency, lines)


def _preview(subscription: Subscription, period: Period, currency: str, lines: list[LineDraft]) -> Invoice:
    """The unsaved invoice of a preview, its waterfall included (coupons and credits as they
    stand now: what issuing it would take from them)."""
    invoice = Invoice(
        project=subscription.project,
        customer=subscription.customer,
        subscription=subscription,
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
        currency=currency,
        period_start=period.start,
        period_end=period.end,
    )
    waterfall = waterfall_for(invoice, lines, lock=False)
    invoice_totals_set(invoice, waterfall)
    invoice.preview_lines = lines + waterfall.lines
    return invoice


def proration_invoice(*, subscription: Subscription, at: datetime) -> Invoice | None:
    """After a plan change made with proration_behavior always_invoice: the change's proration
    (the current period's fees in advance as the phases now say, minus what was billed for
    them) on an invoice of its own, issued or held for review at once. Idempotent: one such
    invoice per subscription and change moment (the invoice_one_per_change constraint decides
    between racing tasks, in _invoice_for); none when nothing is due.
    The next cycle invoice's true-up counts it as billed."""
    with transaction.atomic():
        locked = billing_subscription_locked(subscription.pk)
        reason = BillingReason.SUBSCRIPTION_UPDATE
        if Invoice.objects.filter(subscription=locked, billing_reason=reason, period_start=at).exists():
            return None
        probe = Invoice(subscription=locked, billing_reason=reason, currency=locked.plan.currency)
        probe.period_start = probe.period_end = at
        if not compute_lines(probe):
            return None
        invoice, created = _invoice_for(locked, reason=reason, period=Period(at, at))
        if not created:  # a concurrent run made it first
            return None
        _close_invoice(invoice, created=True, result=CloseResult())
    return invoice


def lines_total(lines: Iterable[LineDraft]) -> Decimal:
    return sum((line.amount for line in lines), Decimal(0))


# --- whole-project runs (the scheduled jobs) ----------------------------------------------------


@dataclass
class RunResult:
    closed: CloseResult = field(default_factory=CloseResult)
    subscriptions: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # subscription id → reason


def subscriptions_due(*, as_of: datetime, project_id: int | None = None) -> list[int]:
    """Subscriptions with something to bill at `as_of`: an opening invoice not yet issued, or a
    period that ended before `as_of` minus their project's grace period."""
    from accounts.models import Project

    opening = Invoice.objects.filter(
        subscription=OuterRef("pk"), billing_reason=BillingReason.SUBSCRIPTION_START
    )
    started = Subscription.objects.filter(starts_at__lte=as_of)
    if project_id is not None:
        started = started.filter(project_id=project_id)
    due: set[int] = set(started.filter(~Exists(opening)).values_list("pk", flat=True))
    for project in Project.objects.filter(pk__in=started.values("project_id")):
        cutoff = as_of - timedelta(hours=project.grace_period_hours)
        ended = started.filter(project=project, current_period_start__lt=F("current_period_end")).filter(
            Q(current_period_end__lte=cutoff) | Q(ends_at__lte=cutoff)
        )
        due.update(ended.values_list("pk", flat=True))
    return sorted(due)


def future_close_check(*, as_of: datetime, project_id: int | None = None) -> None:
    """Refuse a close as of a moment still to come (beyond CLOCK_SKEW): it would issue numbered
    invoices for periods that have not happened. Sandbox projects may rehearse one."""
    from accounts.models import Project

    if as_of <= timezone.now() + CLOCK_SKEW:
        return
    real = Project.objects.filter(sandbox=False)
    if project_id is not None:
        real = real.filter(pk=project_id)
    names = list(real.order_by("name").values_list("name", flat=True)[:5])
    if names:
        raise Unprocessable(
            f"{as_of.isoformat()} is in the future: closing as of it would issue invoices for periods "
            "that have not happened. Only sandbox projects may close ahead of the clock, and "
            f"{', '.join(names)} {'is not one' if len(names) == 1 else 'are not'}; "
            "close one sandbox project with --project.",
            code="as_of_in_future",
            param="as_of",
        )


# Subscriptions closed per transaction: one. A transaction of several would hold the number
# sequence of each project it issued for, and the customers' wallet and coupon locks, until it
# commits, while an API issue takes the customer's wallet, then the number: two closes batching
# across projects, or a close and an approval of the same project, could deadlock (found in
# review, issue 14). Measured (bench/close.py, 300 × 2,000 events): 171.8× the raw GROUP BY with
# one subscription a transaction, 168.1–168.6× with 25: the commits are not what the close costs.
CLOSE_BATCH = 1


def billing_close(
    *, as_of: datetime, project_id: int | None = None, progress=None, dry_run: bool = False
) -> RunResult:
    """Close every due period (see _close_locked), in batches of CLOSE_BATCH subscriptions, one
    transaction each. A batch claims its subscriptions with SKIP LOCKED, so a concurrent run takes
    other batches instead of waiting; what was held elsewhere is claimed again at the end, waiting
    this time, and is found closed or closed then. One subscription's failure is recorded with its
    reason and does not stop the others. A future `as_of` is refused unless every project concerned
    is a sandbox (future_close_check)."""
    future_close_check(as_of=as_of, project_id=project_id)
    run = RunResult()
    due = subscriptions_due(as_of=as_of, project_id=project_id)
    if dry_run:
        run.subscriptions = len(due)
        for _ in due:
            if progress is not None:
                progress()
        return run
    held = []
    for index in range(0, len(due), CLOSE_BATCH):
        held += _close_claimed(due[index : index + CLOSE_BATCH], as_of=as_of, run=run, progress=progress)
    for index in range(0, len(held), CLOSE_BATCH):
        _close_claimed(held[index : index + CLOSE_BATCH], as_of=as_of, run=run, progress=progress, wait=True)
    return run


def _close_claimed(
    pks: list[int], *, as_of: datetime, run: RunResult, progress, wait: bool = False
) -> list[int]:
    """_close_batch, with a batch that cannot even be claimed (a lock timeout, a deadlock on its
    rows) reported per subscription like any other failure: the run goes on."""
    try:
        return _close_batch(pks, as_of=as_of, run=run, progress=progress, wait=wait)
    except Exception as exc:  # reported per subscription; the run goes on
        logger.exception("claiming subscriptions %s failed", pks)
        for public_id in Subscription.objects.filter(pk__in=pks).values_list("public_id", flat=True):
            run.failed[public_id] = f"{type(exc).__name__}: {exc}"
        return []


def _close_batch(
    pks: list[int], *, as_of: datetime, run: RunResult, progress, wait: bool = False
) -> list[int]:
    """Close the due periods of the subscriptions `pks` in one transaction; return those another
    transaction held (none when `wait`). Each step of a subscription is a savepoint (_close_locked):
    a failing one is rolled back alone and reported, and the batch goes on."""
    with transaction.atomic():
        claimed = billing_subscriptions_locked(pks, skip_locked=not wait)
        for subscription in claimed:
            run.subscriptions += 1
            grace = timedelta(hours=subscription.project.grace_period_hours)
            try:
                closed = _close_locked(subscription, as_of=as_of, grace=grace)
            except Exception as exc:  # reported per subscription; the run goes on
                logger.exception("closing %s failed", subscription.public_id)
                run.failed[subscription.public_id] = f"{type(exc).__name__}: {exc}"
            else:
                run.closed.add(closed)
                if not (closed.periods_closed or closed.opened):
                    run.skipped += 1
            if progress is not None:
                progress()
    found = {subscription.pk for subscription in claimed}
    return [pk for pk in pks if pk not in found]


def drafts_refresh(*, project_id: int | None = None, now: datetime | None = None, progress=None) -> RunResult:
    """Recompute the upcoming invoice of every running subscription."""
    now = now or timezone.now()
    run = RunResult()
    running = Subscription.objects.filter(
        starts_at__lte=now, current_period_start__lt=F("current_period_end")
    )
    if project_id is not None:
        running = running.filter(project_id=project_id)
    for subscription in running.order_by("pk"):
        run.subscriptions += 1
        try:
            if draft_refresh(subscription=subscription, now=now) is None:
                run.skipped += 1
        except Exception as exc:  # reported per subscription; the run goes on
            logger.exception("refreshing the draft of %s failed", subscription.public_id)
            run.failed[subscription.public_id] = f"{type(exc).__name__}: {exc}"
        if progress is not None:
            progress()
    return run
