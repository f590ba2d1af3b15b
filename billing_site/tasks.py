"""django-q2 entry points: thin wrappers that call services."""

from billing_site.idempotency import idempotency_purge_expired


def purge_idempotency_keys() -> int:
    return idempotency_purge_expired()
