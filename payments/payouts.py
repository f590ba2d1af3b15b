"""Payouts: what is available in a project's balance, sent to its bank account.

`settle_balance` (every 15 minutes) makes one payout per project and currency of what is available
then. Money becomes available by itself (payments.ledger): at a payment's `available_at`, the
project's payout delay after it was paid (48 h by default) or Stripe's own date if later.

- Stripe: the payout is created at Stripe (the Stripe account must be on manual payouts, so that
  Billable decides when); it is `pending` until Stripe's `payout.paid` or `payout.failed` webhook.
  The idempotency key names the project, the currency and the last ledger entry it pays out, so a
  run repeated after a crash asks Stripe for the same payout, not a second one.
- Own processor: your processor moves the money; the payout is recorded as paid at once, so the
  balance reads what is still to be paid out.

Runs for one project hold that project's row lock, so two runs never pay the same money twice.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Max

from accounts.models import PaymentProcessor, Project
from billing_site.aggregates import MoneySum
from billing_site.money import to_minor_units
from payments import ledger, stripe_processor
from payments.models import BalanceEntry, EntryKind, Payout, PayoutStatus
from webhooks.services import event_record

logger = logging.getLogger(__name__)


@dataclass
class SettleSummary:
    payouts: list[Payout] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "project currency" -> why


def projects_with_available(*, now: datetime) -> list[int]:
    return list(
        BalanceEntry.objects.filter(available_at__lte=now)
        .values("project_id", "currency")
        .annotate(total=MoneySum("amount"))
        .filter(total__gt=0)
        .values_list("project_id", flat=True)
        .distinct()
        .order_by("project_id")
    )


def project_payouts(*, project_id: int, now: datetime, summary: SettleSummary) -> None:
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project_id)
        rows = (
            BalanceEntry.objects.filter(project=project, available_at__lte=now)
            .values("currency")
            .annotate(available=MoneySum("amount"), last=Max("pk"))
            .order_by("currency")
        )
        for row in rows:
            if row["available"] > 0:
                try:
                    with transaction.atomic():
                        summary.payouts.append(
                            _payout(project, row["currency"], row["available"], row["last"], now)
                        )
                except stripe_processor.ProcessorError as exc:
                    logger.warning("Payout of %s %s refused by Stripe: %s", project, row["currency"], exc)
                    summary.failed[f"{project.public_id} {row['currency']}"] = exc.message


def _payout(project: Project, currency: str, amount, last_entry: int, now: datetime) -> Payout:
    payout = Payout(project=project, processor=project.payment_processor, currency=currency, amount=amount)
    if project.payment_processor == PaymentProcessor.STRIPE:
        key = f"billable:payout:{project.public_id}:{currency}:{last_entry}"
        created = stripe_processor.plain(
            stripe_processor.call(
                project,
                lambda client: client.v1.payouts.create(
                    params={"amount": to_minor_units(amount, currency), "currency": currency.lower()},
                    options={"idempotency_key": key},
                ),
            )
        )
        payout.processor_reference = created["id"]
        payout.status = created.get("status") or PayoutStatus.PENDING
        if created.get("arrival_date"):
            payout.arrival_at = datetime.fromtimestamp(created["arrival_date"], tz=UTC)
    else:
        payout.status, payout.paid_at, payout.arrival_at = PayoutStatus.PAID, now, now
    payout.save()
    ledger.entry_add(
        project=project,
        kind=EntryKind.PAYOUT,
        reference=payout.public_id,
        currency=currency,
        amount=-amount,
        available_at=now,
        description=f"Payout {payout.public_id}",
        payout=payout,
    )
    event_record(project=project, type="payout.created", obj=payout)
    if payout.status == PayoutStatus.PAID:
        event_record(project=project, type="payout.paid", obj=payout)
    return payout


def balance_settle(*, now: datetime, project_id: int | None = None, progress=None) -> SettleSummary:
    """`settle_balance`: pay out what is available. Safe to run twice, concurrently, after a crash."""
    summary = SettleSummary()
    project_ids = projects_with_available(now=now)
    if project_id is not None:
        project_ids = [pk for pk in project_ids if pk == project_id]
    for pk in project_ids:
        project_payouts(project_id=pk, now=now, summary=summary)
        if progress:
            progress()
    return summary


def payout_update(
    *, payout: Payout, status: str, failure_code: str = "", failure_message: str = ""
) -> Payout:
    """Stripe says a payout arrived or failed (its webhook). A failed payout's money returns to the
    available balance. Reports of a status the payout already has change nothing."""
    with transaction.atomic():
        payout = Payout.objects.select_for_update().select_related("project").get(pk=payout.pk)
        if payout.status == status or payout.status in (
            PayoutStatus.PAID,
            PayoutStatus.FAILED,
            PayoutStatus.CANCELED,
        ):
            return payout
        payout.status = status
        if status == PayoutStatus.PAID:
            payout.paid_at = datetime.now(tz=UTC)
        payout.failure_code, payout.failure_message = failure_code, failure_message
        payout.save()
        if status in (PayoutStatus.FAILED, PayoutStatus.CANCELED):
            ledger.entry_add(
                project=payout.project,
                kind=EntryKind.PAYOUT_FAILURE,
                reference=payout.public_id,
                currency=payout.currency,
                amount=payout.amount,
                available_at=datetime.now(tz=UTC),
                description=f"Payout {payout.public_id} {status}",
                payout=payout,
            )
        event_record(project=payout.project, type=f"payout.{status}", obj=payout)
    return payout
