"""Prepaid credits: a customer's wallets, the grants in them and the ledger of their movements.

A wallet is a customer's credits in one currency. Credits come in grants: given for free
(`credits_grant`) or bought (invoicing/purchases.py: "a purchase is an invoice", usable once
that invoice is paid). Each grant's balance is the sum of its ledger entries (CreditEntry): + grant,
- applied to an invoice, + released (that invoice voided), - expired, - voided. Entries are never
edited; the model's unique constraints make each movement happen once, however often a job runs.

The invoice maths (invoicing/waterfall.py) reads `credit_blocks` under `wallet_lock` and, when the
invoice is issued, records what it took with `credits_applied_record`; voiding an issued invoice
gives it back (`credits_release`). Every movement that takes the wallet's usable balance from at
least its `low_balance_threshold` to below it announces `credits.balance_low`, once per crossing.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from accounts.services import Actor, audit_record
from billing_site.aggregates import MoneySum
from billing_site.errors import InvalidInput, InvalidState, NotFound, Unprocessable
from billing_site.money import is_currency, round_money, to_minor_units
from catalog.models import Customer
from invoicing.models import (
    MAX_AMOUNT,
    CreditEntry,
    CreditEntryKind,
    CreditGrant,
    CreditNote,
    CreditSource,
    Invoice,
    LineType,
    Wallet,
)
from meters.staleness import drafts_stale_after_commit
from webhooks.services import event_record

MAX_NAME = 200
MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 100, 50


@dataclass(frozen=True)
class CreditBlock:
    grant: CreditGrant
    balance: Decimal  # > 0


# --- reads ------------------------------------------------------------------------------------


def _with_balance(grants: QuerySet[CreditGrant]) -> QuerySet[CreditGrant]:
    """Each grant with `balance`, the sum of its entries (None for a grant with none yet: a
    purchase not paid). MoneySum without `default`: Coalesce would drop its exact rounding."""
    return grants.annotate(balance=MoneySum("entries__amount"))


def _usable(grants: QuerySet[CreditGrant], at: datetime) -> QuerySet[CreditGrant]:
    return grants.filter(voided_at__isnull=True, available_at__lte=at).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=at)
    )


def _application_order(blocks: list[CreditBlock]) -> list[CreditBlock]:
    # Priority, then the soonest to expire (never-expiring last), then the oldest grant.
    return sorted(
        blocks,
        key=lambda block: (
            block.grant.priority,
            block.grant.expires_at is None,
            block.grant.expires_at or datetime.min.replace(tzinfo=UTC),
            block.grant.pk,
        ),
    )


def credit_blocks(*, customer: Customer, currency: str, at: datetime) -> list[CreditBlock]:
    """Grants usable at `at`: not voided, available_at <= at, not expired (expires_at > at or None),
    balance > 0 (balance = sum of the grant's entries), in application order: priority, then
    expires_at (None last), then id."""
    grants = _usable(CreditGrant.objects.filter(wallet__customer=customer, wallet__currency=currency), at)
    blocks = [
        CreditBlock(grant=grant, balance=grant.balance)
        for grant in _with_balance(grants).select_related("wallet")
        if grant.balance and grant.balance > 0
    ]
    return _application_order(blocks)


def wallet_balance(*, wallet: Wallet, at: datetime) -> Decimal:
    """The wallet's usable balance at `at`: what credit_blocks would offer an invoice."""
    total = _with_balance(_usable(wallet.grants.all(), at)).filter(balance__gt=0)
    return sum((grant.balance for grant in total), Decimal(0))


def grant_balance(grant: CreditGrant) -> Decimal:
    return grant.entries.aggregate(total=MoneySum("amount"))["total"] or Decimal(0)


def wallet_list(*, customer: Customer) -> QuerySet[Wallet]:
    """The customer's wallets with their grants (each annotated with its balance)."""
    grants = _with_balance(CreditGrant.objects.select_related("invoice", "wallet"))
    return (
        Wallet.objects.filter(project=customer.project, customer=customer)
        .select_related("customer", "project")
        .prefetch_related(Prefetch("grants", queryset=grants))
    )


def wallet_entries(*, wallet: Wallet, limit: int = 20) -> list[CreditEntry]:
    """The wallet's latest ledger entries, newest first."""
    entries = CreditEntry.objects.filter(grant__wallet=wallet).select_related("grant", "invoice")
    return list(entries.order_by("-created_at", "-id")[:limit])


def credit_grant_list(*, project) -> QuerySet[CreditGrant]:
    return _with_balance(
        CreditGrant.objects.filter(project=project).select_related("wallet__customer", "invoice", "project")
    )


# --- the wallet and its lock ------------------------------------------------------------------


def wallet_lock(*, customer: Customer, currency: str) -> Wallet | None:
    """select_for_update the customer's wallet in that currency (None when there is none). Called
    before applying credits."""
    return (
        Wallet.objects.select_for_update()
        .select_related("customer", "project")
        .filter(customer=customer, currency=currency)
        .first()
    )


def wallet_get_or_create(*, customer: Customer, currency: str) -> Wallet:
    """The wallet, created on first use; called in a transaction. Two first uses racing: the
    unique constraint (customer, currency) lets one insert win; the other reads the winner's row.

    The customer's row is locked first, as customer_delete locks it: a customer deleted meanwhile
    is NotFound here, and a customer given a wallet meanwhile is in use there. Without the lock
    both went through and PostgreSQL refused the wallet's foreign key at commit (a 500 the
    schemathesis run found)."""
    if not Customer.objects.select_for_update().filter(pk=customer.pk).exists():
        raise NotFound(f"No such customer: '{customer.public_id}'.")
    wallet = Wallet.objects.filter(customer=customer, currency=currency).first()
    if wallet is not None:
        return wallet
    try:
        with transaction.atomic():
            return Wallet.objects.create(project=customer.project, customer=customer, currency=currency)
    except IntegrityError:
        return Wallet.objects.get(customer=customer, currency=currency)


def _entry_add(
    grant: CreditGrant,
    kind: str,
    amount: Decimal,
    invoice: Invoice | None = None,
    credit_note: CreditNote | None = None,
):
    """Enter a movement once: a repeat of the same (grant, kind, invoice, credit note) enters
    nothing and returns None (another process, or an earlier run, got there first)."""
    key = {"grant": grant, "kind": kind, "invoice": invoice, "credit_note": credit_note}
    try:
        with transaction.atomic():
            return CreditEntry.objects.create(project_id=grant.project_id, amount=amount, **key)
    except IntegrityError:
        if CreditEntry.objects.filter(**key).exists():
            return None
        raise


def _balance_low_check(wallet: Wallet, before: Decimal, after: Decimal) -> None:
    """`credits.balance_low` when a movement took the usable balance from at least the threshold to
    below it: once per crossing (a later movement below the threshold does not cross it again)."""
    threshold = wallet.low_balance_threshold
    if threshold is None or not (before >= threshold > after):
        return
    event_record(
        project=wallet.project,
        type="credits.balance_low",
        obj=wallet,
        data={
            "wallet": wallet.public_id,
            "customer": wallet.customer.public_id,
            "currency": wallet.currency,
            "balance": _minor(after, wallet.currency),
            "threshold": _minor(threshold, wallet.currency),
        },
    )


def _minor(amount: Decimal, currency: str) -> dict:
    return {"amount": to_minor_units(round_money(amount, currency), currency), "currency": currency}


# --- validation shared by grants and purchases --------------------------------------------------


def credit_currency(currency: str) -> str:
    if not isinstance(currency, str) or not is_currency(currency):
        raise InvalidInput(
            f"{currency!r} is not an ISO 4217 currency code in use, upper case (e.g. USD).",
            code="invalid_currency",
            param="currency",
        )
    return currency


def credit_amount(amount, currency: str, param: str, *, allow_zero: bool = False) -> Decimal:
    amount = Decimal(amount)
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidInput("A positive amount.", code="invalid_amount", param=param)
    rounded = round_money(amount, currency)
    if rounded != amount:
        raise InvalidInput(
            f"{currency} amounts have at most {-rounded.as_tuple().exponent} decimal places.",
            code="too_many_decimal_places",
            param=param,
        )
    if amount >= MAX_AMOUNT:
        raise Unprocessable(f"At most {MAX_AMOUNT:,} (exclusive).", code="amount_too_large", param=param)
    return amount


def credit_grant_fields(name: str | None, priority: int | None, expires_at: datetime | None, now: datetime):
    name = name or ""
    if len(name) > MAX_NAME:
        raise InvalidInput(f"At most {MAX_NAME} characters.", code="max_length", param="name")
    priority = DEFAULT_PRIORITY if priority is None else priority
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidInput(
            f"From {MIN_PRIORITY} to {MAX_PRIORITY}.", code="invalid_priority", param="priority"
        )
    if expires_at is not None and expires_at <= now:
        raise Unprocessable(
            "Credits that expire before they are granted are no credits.",
            code="expires_in_past",
            param="expires_at",
        )
    return name, priority


# --- writes -----------------------------------------------------------------------------------


def credits_grant(
    *,
    customer: Customer,
    currency: str,
    amount: Decimal,
    name: str = "",
    priority: int | None = None,
    expires_at: datetime | None = None,
    actor: Actor,
) -> CreditGrant:
    """Give the customer free credits in `currency`, usable at once: a grant and its GRANT entry.
    Emits `credits.granted`."""
    currency = credit_currency(currency)
    amount = credit_amount(amount, currency, "amount")
    now = timezone.now()
    name, priority = credit_grant_fields(name, priority, expires_at, now)
    with transaction.atomic():
        wallet = wallet_get_or_create(customer=customer, currency=currency)
        grant = CreditGrant.objects.create(
            project=customer.project,
            wallet=wallet,
            name=name,
            source=CreditSource.GRANTED,
            amount=amount,
            priority=priority,
            expires_at=expires_at,
            available_at=now,
        )
        _entry_add(grant, CreditEntryKind.GRANT, amount)
        audit_record(
            project=customer.project,
            actor=actor,
            action="credits.granted",
            target=grant,
            changes={"customer": customer.public_id, "currency": currency, "amount": str(amount)},
        )
        event_record(project=customer.project, type="credits.granted", obj=grant)
        drafts_stale_after_commit(project_id=customer.project_id, customer_id=customer.pk)
    return grant


def credits_purchase_paid(*, invoice: Invoice) -> CreditGrant | None:
    """The purchase invoice is paid: its grant becomes usable (GRANT entry, `credits.granted`).
    Called from invoicing.services.invoice_paid_record, in the transaction that paid it; a second
    call changes nothing (the GRANT entry is unique per grant)."""
    grant = CreditGrant.objects.filter(invoice=invoice).select_related("wallet", "project").first()
    if grant is None or grant.voided_at is not None:
        return None
    if _entry_add(grant, CreditEntryKind.GRANT, grant.amount) is None:
        return grant
    grant.available_at = timezone.now()
    grant.save(update_fields=["available_at"])
    event_record(project=grant.project, type="credits.granted", obj=grant)
    drafts_stale_after_commit(project_id=grant.project_id, customer_id=grant.wallet.customer_id)
    return grant


def credits_purchase_voided(*, invoice: Invoice) -> None:
    """The unpaid purchase invoice was voided: its grant will never be usable."""
    CreditGrant.objects.filter(invoice=invoice, available_at__isnull=True, voided_at__isnull=True).update(
        voided_at=timezone.now()
    )


def credit_grant_void(*, grant: CreditGrant, actor: Actor) -> CreditGrant:
    """Take back what is left of a grant (a VOIDED entry of its remaining balance); it is never
    used again. What it already paid stays paid. A purchase not paid yet is voided by voiding its
    invoice instead (422 `purchase_unpaid`)."""
    with transaction.atomic():
        wallet = (
            Wallet.objects.select_for_update().select_related("project", "customer").get(pk=grant.wallet_id)
        )
        grant = CreditGrant.objects.select_related("project").get(pk=grant.pk)
        if grant.voided_at is not None:
            raise InvalidState(
                "This grant is already void.", current="voided", requested="voided", code="already_voided"
            )
        if grant.available_at is None:
            raise InvalidState(
                "This purchase is not paid yet: void its invoice instead.",
                current="unpaid",
                requested="voided",
                code="purchase_unpaid",
            )
        now = timezone.now()
        before = wallet_balance(wallet=wallet, at=now)
        remaining = grant_balance(grant)
        if remaining > 0:
            _entry_add(grant, CreditEntryKind.VOIDED, -remaining)
        grant.voided_at = now
        grant.save(update_fields=["voided_at"])
        audit_record(
            project=grant.project,
            actor=actor,
            action="credits.voided",
            target=grant,
            changes={"balance": str(remaining)},
        )
        event_record(project=grant.project, type="credits.voided", obj=grant)
        drafts_stale_after_commit(project_id=grant.project_id, customer_id=wallet.customer_id)
        _balance_low_check(wallet, before, wallet_balance(wallet=wallet, at=now))
    return grant


def credits_applied_record(*, invoice: Invoice) -> None:
    """At issue, in the issuing transaction, after wallet_lock: one APPLIED entry (-amount) per
    PREPAID_CREDIT line of the invoice (line.credit_grant, -line.amount is positive); then the
    low-balance check. Recording an invoice's entries twice enters them once."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("credits_applied_record() must run inside the transaction that issues the invoice")
    lines = list(
        invoice.lines.filter(type=LineType.PREPAID_CREDIT, credit_grant__isnull=False).select_related(
            "credit_grant"
        )
    )
    if not lines:
        return
    wallet = wallet_lock(customer=invoice.customer, currency=invoice.currency)
    now = timezone.now()
    before = wallet_balance(wallet=wallet, at=now)
    for line in lines:
        _entry_add(line.credit_grant, CreditEntryKind.APPLIED, line.amount, invoice)  # line.amount < 0
    _balance_low_check(wallet, before, wallet_balance(wallet=wallet, at=now))
    # The customer's other drafts counted on these credits.
    drafts_stale_after_commit(project_id=invoice.project_id, customer_id=invoice.customer_id)


def credits_release(*, invoice: Invoice) -> None:
    """When an issued invoice is voided: one RELEASED entry (+) per APPLIED entry of that invoice
    (expired grants included: they are released and expire again at the next expiry run). A second
    call releases nothing more."""
    applied = list(
        CreditEntry.objects.filter(invoice=invoice, kind=CreditEntryKind.APPLIED).select_related("grant")
    )
    if not applied:
        return
    wallet_lock(customer=invoice.customer, currency=invoice.currency)
    for entry in applied:
        if _entry_add(entry.grant, CreditEntryKind.RELEASED, -entry.amount, invoice):
            _released_to_void(entry.grant, -entry.amount, invoice=invoice)
    drafts_stale_after_commit(project_id=invoice.project_id, customer_id=invoice.customer_id)


def credits_returnable(invoice: Invoice) -> Decimal:
    """What of the prepaid credits an invoice took has not been given back yet."""
    moved = CreditEntry.objects.filter(
        invoice=invoice, kind__in=(CreditEntryKind.APPLIED, CreditEntryKind.RELEASED)
    ).aggregate(total=MoneySum("amount"))["total"]
    return -(moved or Decimal(0))


def credits_return(*, invoice: Invoice, credit_note: CreditNote, amount: Decimal) -> None:
    """A credit note gives back `amount` of the credits the invoice took (at most
    credits_returnable): grant by grant, the last one used first, each up to what it paid. In the
    credit note's transaction; a second call for the same note enters nothing more."""
    wallet_lock(customer=invoice.customer, currency=invoice.currency)
    taken: dict[int, Decimal] = {}
    grants: dict[int, CreditGrant] = {}
    entries = CreditEntry.objects.filter(
        invoice=invoice, kind__in=(CreditEntryKind.APPLIED, CreditEntryKind.RELEASED)
    ).select_related("grant")
    for entry in entries.order_by("-id"):
        taken[entry.grant_id] = taken.get(entry.grant_id, Decimal(0)) - entry.amount
        grants[entry.grant_id] = entry.grant
    for grant_id, left in taken.items():
        part = min(amount, left)
        if part <= 0:
            continue
        if _entry_add(grants[grant_id], CreditEntryKind.RELEASED, part, invoice, credit_note):
            _released_to_void(grants[grant_id], part, invoice=invoice, credit_note=credit_note)
        amount -= part
    drafts_stale_after_commit(project_id=invoice.project_id, customer_id=invoice.customer_id)


def _released_to_void(
    grant: CreditGrant, amount: Decimal, *, invoice: Invoice, credit_note: CreditNote | None = None
) -> None:
    """Credits given back to a grant voided since are voided again at once: nobody can use them.
    Read under the wallet's lock (taken by the caller), not from a row loaded before it."""
    if CreditGrant.objects.filter(pk=grant.pk, voided_at__isnull=False).exists():
        _entry_add(grant, CreditEntryKind.VOIDED, -amount, invoice, credit_note)


@dataclass
class ExpiryRun:
    grants: int = 0  # grants past their expiry with a balance left
    expired: int = 0  # entries written by this run
    amounts: dict[str, Decimal] = field(default_factory=dict)  # written off, per currency

    def add(self, currency: str, amount: Decimal) -> None:
        self.amounts[currency] = self.amounts.get(currency, Decimal(0)) + amount

    def amounts_text(self) -> str:
        """`30.00 USD, 5 JPY` (or `nothing`)."""
        return (
            ", ".join(
                f"{round_money(amount, currency)} {currency}"
                for currency, amount in sorted(self.amounts.items())
            )
            or "nothing"
        )


def _expiry_key(grant: CreditGrant) -> tuple[bool, dict]:
    """Which EXPIRED entry this expiry is, given the unique constraints: (grant, kind) for entries
    without an invoice, (grant, kind, invoice) and (grant, kind, credit note) for the others.

    The first expiry of a grant has no invoice. A balance left after that can only come from
    releases (a voided invoice, or a credit note, giving back what it took); each such re-expiry is
    keyed by the release's invoice and credit note, which release a grant at most once, so every
    re-expiry also happens at most once. Returns (found, the key's invoice and credit_note)."""
    expired = set(
        grant.entries.filter(kind=CreditEntryKind.EXPIRED).values_list("invoice_id", "credit_note_id")
    )
    if (None, None) not in expired:
        return True, {"invoice": None, "credit_note": None}
    releases = grant.entries.filter(kind=CreditEntryKind.RELEASED).select_related("invoice", "credit_note")
    for release in releases.order_by("id"):
        if (release.invoice_id, release.credit_note_id) not in expired:
            return True, {"invoice": release.invoice, "credit_note": release.credit_note}
    return False, {}


def _expiring(now: datetime) -> QuerySet[CreditGrant]:
    grants = CreditGrant.objects.filter(
        expires_at__lte=now, voided_at__isnull=True, available_at__isnull=False
    )
    return _with_balance(grants).filter(balance__gt=0)


def credits_expiring_count(*, now: datetime) -> int:
    return _expiring(now).count()


def credits_expire(*, now: datetime, dry_run: bool = False, progress=None) -> ExpiryRun:
    """Write off what is left of every grant past its `expires_at` (an EXPIRED entry). Safe to run
    twice or concurrently: the entries are unique, and a second run finds nothing left."""
    run = ExpiryRun()
    for grant_id, wallet_id in list(_expiring(now).order_by("pk").values_list("pk", "wallet_id")):
        run.grants += 1
        if dry_run:
            grant = CreditGrant.objects.select_related("wallet").get(pk=grant_id)
            run.add(grant.wallet.currency, grant_balance(grant))
        else:
            _grant_expire(grant_id, wallet_id, now, run)
        if progress:
            progress()
    return run


def _grant_expire(grant_id: int, wallet_id: int, now: datetime, run: ExpiryRun) -> None:
    with transaction.atomic():
        # The wallet's lock serializes this with invoices applying its credits.
        wallet = Wallet.objects.select_for_update().select_related("project", "customer").get(pk=wallet_id)
        grant = CreditGrant.objects.select_related("project").get(pk=grant_id)
        remaining = grant_balance(grant)
        if remaining <= 0:
            return  # another run got there first
        found, key = _expiry_key(grant)
        if not found:
            return
        if _entry_add(grant, CreditEntryKind.EXPIRED, -remaining, **key) is None:
            return
        run.expired += 1
        run.add(wallet.currency, remaining)
        drafts_stale_after_commit(project_id=grant.project_id, customer_id=wallet.customer_id)
        event_record(
            project=grant.project,
            type="credits.expired",
            obj=grant,
            data={**_grant_payload(grant), "expired": _minor(remaining, grant.wallet.currency)},
        )
        # The grant counted until it expired: the balance it leaves is what crosses the threshold.
        after = wallet_balance(wallet=wallet, at=now)
        _balance_low_check(wallet, after + remaining, after)


def _grant_payload(grant: CreditGrant) -> dict:
    from webhooks.payloads import payload_for

    return payload_for(grant)


def wallet_threshold_set(
    *, customer: Customer, currency: str, low_balance_threshold: Decimal | None, actor: Actor
) -> Wallet:
    """Set (or clear, with None) the balance under which `credits.balance_low` is announced. The
    wallet is created if the customer has none in that currency yet."""
    currency = credit_currency(currency)
    if low_balance_threshold is not None:
        low_balance_threshold = credit_amount(
            low_balance_threshold, currency, "low_balance_threshold", allow_zero=True
        )
    with transaction.atomic():
        wallet = wallet_get_or_create(customer=customer, currency=currency)
        wallet = Wallet.objects.select_for_update().select_related("project", "customer").get(pk=wallet.pk)
        old = wallet.low_balance_threshold
        wallet.low_balance_threshold = low_balance_threshold
        wallet.save(update_fields=["low_balance_threshold"])
        audit_record(
            project=wallet.project,
            actor=actor,
            action="credits.threshold_set",
            target=wallet,
            changes={"low_balance_threshold": [str(old), str(low_balance_threshold)]},
        )
        event_record(project=wallet.project, type="credits.wallet_updated", obj=wallet)
    return wallet
