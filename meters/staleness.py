"""Keeping draft invoices live: usage stored or matched for a subscription marks its draft stale.

`Subscription.draft_stale` is set here, after the usage committed, and cleared by the draft's
recomputation (invoicing.drafts) just before it reads the usage. A read of a stale draft
recomputes it first; a background task recomputes it soon anyway. The flag is written only
when it flips (`AND NOT draft_stale`), so a stream of events for one subscription costs one
row write per recomputation, not one per request, and only a flip queues a task: refreshes
coalesce.
"""

from collections.abc import Iterable

from django.db import connection
from django_q.tasks import async_task

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
