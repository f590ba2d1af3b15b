"""Live drafts: a draft invoice shows the usage accepted before it is read.

Ingestion and rematching mark a subscription's draft stale once the usage committed
(meters.staleness). Reading a draft through the API or the admin recomputes it first when it is
stale (drafts_freshen), and a background task queued by the marking recomputes it soon after
anyway (draft_freshen); the 15-minute refresh of every draft stays as a backstop.

The flag is cleared in its own transaction before the recomputation reads the usage: usage that
commits after the clearing flips it again (and is refreshed again); usage that committed before
it is visible to the recomputation. Nothing is missed, and two readers racing recompute once.
"""

from django.db import transaction
from django.db.models import QuerySet

from invoicing.billing import draft_refresh
from invoicing.models import Invoice, InvoiceStatus
from subscriptions.models import Subscription

# A read recomputes at most this many stale drafts (a page of the API); the task does the rest.
READ_LIMIT = 100


def draft_freshen(*, subscription_id: int) -> bool:
    """Recompute the subscription's draft if it is stale; whether it was."""
    with transaction.atomic():
        cleared = Subscription.objects.filter(pk=subscription_id, draft_stale=True).update(draft_stale=False)
    if not cleared:
        return False
    try:
        draft_refresh(subscription=Subscription.objects.get(pk=subscription_id))
    except Exception:
        Subscription.objects.filter(pk=subscription_id).update(draft_stale=True)
        raise
    return True


def drafts_freshen(invoices: QuerySet[Invoice]) -> int:
    """Recompute the stale drafts among these invoices, before they are read; how many."""
    stale = (
        invoices.filter(status=InvoiceStatus.DRAFT, subscription__draft_stale=True)
        .values_list("subscription_id", flat=True)
        .distinct()[:READ_LIMIT]
    )
    return sum(draft_freshen(subscription_id=pk) for pk in list(stale))
