"""Keeping draft invoices live: usage stored or matched for a subscription marks its draft stale.

`Subscription.draft_stale` is set here, after the usage committed, and cleared by the draft's
recomputation (invoicing.drafts) just before it reads the usage. A read of a stale draft
recomputes it first; a background task recomputes it soon anyway. The flag is written only
when it flips (`AND NOT draft_stale`), so a stream of events for one subscription costs one
row write per recomputation, not one per request, and only a flip queues a task: refreshes
coalesce.
"""

from collections.abc import Iterable
from functools import partial

from django.db import connection, transaction
from django.db.models import F
from django_q.tasks import async_task

from subscriptions.models import Subscription

SUBSCRIPTION_TABLE = "subscriptions_subscription"


def drafts_mark_stale(subscription_ids: Iterable[int | None]) -> list[int]:
    """Mark the drafts of these subscriptions stale (outside the ingesting transaction, once it
    committed) and queue their refresh; the subscriptions that were fresh until now."""
    ids = sorted({pk for pk in subscription_ids if pk is not None})
    if not ids:
        return []
    placeholders = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SUBSCRIPTION_TABLE} SET draft_stale = %s "  # noqa: S608 - placeholders only
            f"WHERE id IN ({placeholders}) AND NOT draft_stale RETURNING id",
            [True, *ids],
        )
        flipped = sorted(row[0] for row in cursor.fetchall())
    if flipped:
        async_task("invoicing.tasks.refresh_stale_drafts", flipped)
    return flipped


def drafts_stale_after_commit(*, project_id: int, customer_id: int | None = None) -> None:
    """Once the caller's transaction commits, mark stale the drafts of the running subscriptions
    of a customer (or of the whole project): what discounts, taxes or credits them changed (a
    coupon applied, credits granted, a tax rate edited), not their usage."""
    transaction.on_commit(partial(_drafts_mark_stale_of, project_id, customer_id), robust=True)


def _drafts_mark_stale_of(project_id: int, customer_id: int | None) -> None:
    running = Subscription.objects.filter(
        project_id=project_id, current_period_start__lt=F("current_period_end")
    )
    if customer_id is not None:
        drafts_mark_stale(running.filter(customer_id=customer_id).values_list("pk", flat=True))
    else:
        # A whole project: one statement however many subscriptions, and no task for each; reads
        # and the 15-minute refresh recompute them.
        running.filter(draft_stale=False).update(draft_stale=True)
