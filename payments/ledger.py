"""The balance ledger: one signed row per money movement, written once, never edited.

A project's balance is read off the rows (payments.selectors.balance_for): a movement counts as
`pending` until its `available_at`, then as `available`; payouts take available money out. So the
balance needs no job to move money from pending to available, and it is the same whoever reads
it when; `settle_balance` only turns what is available into payouts.
"""

from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction

from accounts.models import Project
from payments.models import BalanceEntry, EntryKind, Payment, Payout, Refund


def entry_add(
    *,
    project: Project,
    kind: EntryKind,
    reference: str,
    currency: str,
    amount: Decimal,
    available_at: datetime,
    description: str = "",
    payment: Payment | None = None,
    refund: Refund | None = None,
    payout: Payout | None = None,
) -> BalanceEntry | None:
    """Enter a movement once: a second report of the same (kind, reference) — a webhook repeated,
    a task rerun — enters nothing and returns None. Call inside the transaction of the change."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("entry_add() must run inside the transaction of the movement it records")
    try:
        with transaction.atomic():
            return BalanceEntry.objects.create(
                project=project,
                kind=kind,
                reference=reference,
                currency=currency,
                amount=amount,
                available_at=available_at,
                description=description[:300],
                payment=payment,
                refund=refund,
                payout=payout,
            )
    except IntegrityError:
        if BalanceEntry.objects.filter(project=project, kind=kind, reference=reference).exists():
            return None
        raise
