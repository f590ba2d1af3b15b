"""Prepaid credits: the ledger, the order grants are used in, expiry, release, purchases, the
low-balance alert and the API (docs/credits.md)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import transaction

from accounts.models import AuditLogEntry
from invoicing import credits
from invoicing.credits import (
    credit_blocks,
    credit_grant_void,
    credits_applied_record,
    credits_expire,
    credits_grant,
    credits_release,
    wallet_lock,
    wallet_threshold_set,
)
from invoicing.models import (
    BillingReason,
    CreditEntry,
    CreditGrant,
    Invoice,
    InvoiceStatus,
    LineType,
    Wallet,
)
from invoicing.purchases import credits_purchase
from invoicing.services import invoice_issue, invoice_void
from payments.services import payment_record
from tests.catalog.factories import CustomerFactory
from tests.invoicing.factories import draft_invoice, issued_invoice
from webhooks.models import Event

pytestmark = pytest.mark.django_db

D = Decimal
NOV_2 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _entries(grant):
    return [(entry.kind, entry.amount) for entry in CreditEntry.objects.filter(grant=grant).order_by("id")]


def _events(project, prefix="credits."):
    return list(
        Event.objects.filter(project=project, type__startswith=prefix)
        .order_by("id")
        .values_list("type", flat=True)
    )


def invoice_with_credits(customer, taken: list[tuple[CreditGrant, str]], *, due: str = "0") -> Invoice:
    """An invoice of the customer issued for what `taken` [(grant, amount)] adds up to plus `due`,
    whose waterfall pays `taken` with those credits (checked), the entries recorded at issue. With
    nothing left due it is paid; otherwise it is open (and can be voided)."""
    total = sum((D(amount) for _, amount in taken), D(due))
    invoice = issued_invoice(customer.project, total=str(total), customer=customer)
    applied = [
        (line.credit_grant, -line.amount) for line in invoice.lines.filter(type=LineType.PREPAID_CREDIT)
    ]
    assert applied == [(grant, D(amount)) for grant, amount in taken]
    return invoice


@pytest.fixture
def customer(project):
    return CustomerFactory(project=project)


def _grant(customer, amount="50.00", **fields):
    return credits_grant(customer=customer, currency="USD", amount=D(amount), actor=None, **fields)


# --- the ledger -------------------------------------------------------------------------------


def test_a_grant_creates_the_wallet_and_its_grant_entry(project, customer):
    grant = _grant(customer, "50.00", name="Welcome", priority=10)

    wallet = Wallet.objects.get(customer=customer, currency="USD")
    assert (grant.wallet, grant.source, grant.amount, grant.priority) == (wallet, "granted", D("50.00"), 10)
    assert _entries(grant) == [("grant", D("50.00"))]
    assert credits.wallet_balance(wallet=wallet, at=grant.available_at) == D("50.00")
    assert _events(project) == ["credits.granted"]
    assert AuditLogEntry.objects.filter(action="credits.granted", object_id=grant.public_id).count() == 1


def test_the_balance_is_the_sum_of_the_entries(project, customer):
    grant = _grant(customer, "50.00")

    invoice = invoice_with_credits(customer, [(grant, "50.00")], due="20.00")
    invoice_void(invoice=invoice, actor=None, reason="wrong")
    invoice_with_credits(customer, [(grant, "45.50")])

    assert _entries(grant) == [
        ("grant", D("50.00")),
        ("applied", D("-50.00")),
        ("released", D("50.00")),
        ("applied", D("-45.50")),
    ]
    assert credits.grant_balance(grant) == D("4.50")


def test_recording_an_invoice_twice_enters_its_credits_once(customer):
    grant = _grant(customer, "50.00")
    invoice = invoice_with_credits(customer, [(grant, "20.00")])

    with transaction.atomic():
        credits_applied_record(invoice=invoice)

    assert credits.grant_balance(grant) == D("30.00")


def test_credit_blocks_come_in_priority_then_expiry_then_age_order(customer):
    used_up = _grant(customer, "8.00", priority=1)
    invoice_with_credits(customer, [(used_up, "8.00")])
    now = datetime.now(tz=UTC)
    late = _grant(customer, "1.00", priority=50, expires_at=now + timedelta(days=30))
    never = _grant(customer, "2.00", priority=50)
    soon = _grant(customer, "3.00", priority=50, expires_at=now + timedelta(days=1))
    urgent = _grant(customer, "4.00", priority=0)
    also_never = _grant(customer, "5.00", priority=50)
    _grant(customer, "6.00", priority=50, expires_at=now + timedelta(seconds=1))  # expired at `at`
    voided = _grant(customer, "7.00", priority=1)
    credit_grant_void(grant=voided, actor=None)
    credits_grant(customer=customer, currency="EUR", amount=D("9"), actor=None)

    blocks = credit_blocks(customer=customer, currency="USD", at=now + timedelta(minutes=1))

    assert [(block.grant, block.balance) for block in blocks] == [
        (urgent, D("4.00")),
        (soon, D("3.00")),
        (late, D("1.00")),
        (never, D("2.00")),
        (also_never, D("5.00")),
    ]


def test_an_unpaid_purchase_is_not_a_credit_block(customer):
    credits_purchase(customer=customer, currency="USD", amount=D("100"), actor=None)

    assert credit_blocks(customer=customer, currency="USD", at=datetime.now(tz=UTC)) == []


def test_wallet_lock_is_none_without_a_wallet(customer):
    with transaction.atomic():
        assert wallet_lock(customer=customer, currency="USD") is None


# --- void, release, expiry ----------------------------------------------------------------------


def test_voiding_a_grant_takes_back_what_is_left(project, customer):
    grant = _grant(customer, "50.00")
    invoice_with_credits(customer, [(grant, "20.00")])

    credit_grant_void(grant=grant, actor=None)

    grant.refresh_from_db()
    assert grant.voided_at is not None
    assert _entries(grant)[-1] == ("voided", D("-30.00"))
    assert credits.grant_balance(grant) == 0
    assert _events(project) == ["credits.granted", "credits.voided"]


def test_voiding_a_grant_twice_is_refused_and_changes_nothing(customer):
    grant = _grant(customer, "50.00")
    credit_grant_void(grant=grant, actor=None)
    before = CreditEntry.objects.count(), Event.objects.count()

    with pytest.raises(credits.InvalidState) as refused:
        credit_grant_void(grant=grant, actor=None)

    assert refused.value.code == "already_voided"
    assert (CreditEntry.objects.count(), Event.objects.count()) == before


def test_voiding_an_invoice_releases_the_credits_it_took(customer):
    first = _grant(customer, "10.00", priority=0)
    second = _grant(customer, "50.00")
    invoice = invoice_with_credits(customer, [(first, "10.00"), (second, "50.00")], due="5.00")

    invoice_void(invoice=invoice, actor=None, reason="billed twice")
    with transaction.atomic():
        credits_release(invoice=invoice)  # a second release gives back nothing more

    assert _entries(first) == [("grant", D("10.00")), ("applied", D("-10.00")), ("released", D("10.00"))]
    assert _entries(second) == [("grant", D("50.00")), ("applied", D("-50.00")), ("released", D("50.00"))]
    assert CreditEntry.objects.filter(kind="released", invoice=invoice).count() == 2


def test_expiry_writes_off_the_balance_once_however_often_it_runs(project, customer):
    with time_machine.travel(NOV_2, tick=False):
        grant = _grant(customer, "50.00", expires_at=NOV_2 + timedelta(days=1))
        invoice_with_credits(customer, [(grant, "20.00")])
    later = NOV_2 + timedelta(days=2)

    first = credits_expire(now=later)
    second = credits_expire(now=later)

    assert (first.grants, first.expired, first.amounts) == (1, 1, {"USD": D("30.00")})
    assert (second.grants, second.expired) == (0, 0)
    assert _entries(grant)[-1] == ("expired", D("-30.00"))
    assert CreditEntry.objects.filter(grant=grant, kind="expired").count() == 1
    assert _events(project).count("credits.expired") == 1


def test_a_grant_not_yet_expired_is_left_alone(customer):
    grant = _grant(customer, "50.00", expires_at=datetime.now(tz=UTC) + timedelta(days=1))

    assert credits_expire(now=datetime.now(tz=UTC)).expired == 0
    assert credits.grant_balance(grant) == D("50.00")


def test_credits_released_after_expiry_expire_again(customer):
    with time_machine.travel(NOV_2, tick=False):
        grant = _grant(customer, "50.00", expires_at=NOV_2 + timedelta(days=1))
        invoice = invoice_with_credits(customer, [(grant, "50.00")], due="20.00")
    credits_expire(now=NOV_2 + timedelta(days=2))

    invoice_void(invoice=invoice, actor=None, reason="wrong")
    assert credits.grant_balance(grant) == D("50.00")
    assert credit_blocks(customer=customer, currency="USD", at=datetime.now(tz=UTC)) == []
    credits_expire(now=datetime.now(tz=UTC))
    credits_expire(now=datetime.now(tz=UTC))

    assert _entries(grant)[-2:] == [("released", D("50.00")), ("expired", D("-50.00"))]
    assert credits.grant_balance(grant) == 0


def test_expire_credits_command_dry_run_changes_nothing_then_runs_once(customer):
    with time_machine.travel(NOV_2, tick=False):
        grant = _grant(customer, "50.00", expires_at=NOV_2 + timedelta(days=1))

    dry, out, again = StringIO(), StringIO(), StringIO()
    call_command("expire_credits", "--dry-run", stdout=dry)
    assert credits.grant_balance(grant) == D("50.00")
    call_command("expire_credits", stdout=out)
    call_command("expire_credits", stdout=again)

    assert dry.getvalue().strip() == "1 grant(s) would expire: 50.00 USD (dry run)."
    assert out.getvalue().strip() == "expired 1 grant(s): 50.00 USD"
    assert again.getvalue().strip() == "expired 0 grant(s): nothing"
    assert credits.grant_balance(grant) == 0


# --- purchases ----------------------------------------------------------------------------------


def test_a_purchase_is_an_issued_invoice_and_unusable_until_paid(project, customer):
    grant = credits_purchase(
        customer=customer, currency="USD", amount=D("100.00"), price=D("90.00"), name="Pack", actor=None
    )

    invoice = grant.invoice
    line = invoice.lines.get()
    assert (invoice.billing_reason, invoice.subscription, invoice.status) == (
        BillingReason.CREDIT_PURCHASE,
        None,
        InvoiceStatus.OPEN,
    )
    assert invoice.number == "ACME-000001"
    assert (invoice.subtotal, invoice.total, invoice.amount_due) == (D("90.00"), D("90.00"), D("90.00"))
    assert invoice.due_at - invoice.issued_at == timedelta(days=project.payment_terms_days)
    assert (line.type, line.description, line.amount) == (
        "credit_purchase",
        "Prepaid credits: 100.00 USD",
        D("90.00"),
    )
    assert (grant.source, grant.available_at) == ("purchased", None)
    assert _entries(grant) == []
    assert _events(project) == ["credits.purchased"]


def test_paying_the_purchase_makes_the_credits_usable(project, customer):
    grant = credits_purchase(customer=customer, currency="USD", amount=D("100.00"), actor=None)

    payment_record(invoice=grant.invoice, amount=D("100.00"), actor=None)

    grant.refresh_from_db()
    assert grant.available_at is not None
    assert _entries(grant) == [("grant", D("100.00"))]
    assert [
        (b.grant, b.balance) for b in credit_blocks(customer=customer, currency="USD", at=grant.available_at)
    ] == [(grant, D("100.00"))]
    assert _events(project) == ["credits.purchased", "credits.granted"]
    assert Event.objects.filter(type="invoice.paid", object_id=grant.invoice.public_id).count() == 1


def test_a_purchase_for_nothing_is_granted_at_once(customer):
    grant = credits_purchase(customer=customer, currency="USD", amount=D("10.00"), price=D("0"), actor=None)

    assert (grant.invoice.status, grant.available_at is not None) == (InvoiceStatus.PAID, True)
    assert _entries(grant) == [("grant", D("10.00"))]


def test_voiding_an_unpaid_purchase_voids_its_grant(customer):
    grant = credits_purchase(customer=customer, currency="USD", amount=D("10.00"), actor=None)

    invoice_void(invoice=grant.invoice, actor=None, reason="not wanted")

    grant.refresh_from_db()
    assert grant.voided_at is not None
    assert _entries(grant) == []


def test_a_purchase_renders_its_pdf_and_its_email(project, customer):
    from invoicing.documents import document_for

    grant = credits_purchase(customer=customer, currency="USD", amount=D("10.00"), actor=None)

    document = document_for(invoice=grant.invoice)

    assert document.size > 0


# --- the low-balance alert ----------------------------------------------------------------------


def test_the_alert_fires_once_per_crossing(project, customer):
    grant = _grant(customer, "50.00")
    wallet_threshold_set(customer=customer, currency="USD", low_balance_threshold=D("10.00"), actor=None)

    invoice_with_credits(customer, [(grant, "30.00")])  # 50 → 20: above
    invoice_with_credits(customer, [(grant, "15.00")])  # 20 → 5: crosses
    invoice_with_credits(customer, [(grant, "2.00")])  # 5 → 3: already below
    _grant(customer, "20.00")  # 3 → 23: back above
    second = invoice_with_credits(customer, [(grant, "3.00")])  # 23 → 20: above

    lows = Event.objects.filter(type="credits.balance_low").order_by("id")
    assert [event.data for event in lows] == [
        {
            "wallet": grant.wallet.public_id,
            "customer": customer.public_id,
            "currency": "USD",
            "balance": {"amount": 500, "currency": "USD"},
            "threshold": {"amount": 1000, "currency": "USD"},
        }
    ]
    assert second.status == InvoiceStatus.PAID  # the credits paid all of it


def test_the_alert_fires_when_credits_expire_below_the_threshold(customer):
    with time_machine.travel(NOV_2, tick=False):
        _grant(customer, "5.00")
        _grant(customer, "50.00", expires_at=NOV_2 + timedelta(days=1))
        wallet_threshold_set(customer=customer, currency="USD", low_balance_threshold=D("10.00"), actor=None)

    credits_expire(now=NOV_2 + timedelta(days=2))
    credits_expire(now=NOV_2 + timedelta(days=3))

    assert [event.data["balance"] for event in Event.objects.filter(type="credits.balance_low")] == [
        {"amount": 500, "currency": "USD"}
    ]


def test_no_threshold_no_alert(customer):
    grant = _grant(customer, "50.00")

    invoice_with_credits(customer, [(grant, "50.00")])

    assert not Event.objects.filter(type="credits.balance_low").exists()


# --- the API ------------------------------------------------------------------------------------


@time_machine.travel(NOV_2, tick=False)
def test_granting_through_the_api(api, project, customer):
    response = api.post(
        f"/v1/customers/{customer.public_id}/credits",
        {"type": "grant", "currency": "USD", "amount": 5000, "name": "Welcome", "priority": 10,
         "expires_at": "2027-01-01T00:00:00Z"},
        format="json",
    )  # fmt: skip

    assert response.status_code == 201, response.json()
    grant = CreditGrant.objects.get()
    assert response.json() == {
        "id": grant.public_id,
        "customer": customer.public_id,
        "currency": "USD",
        "name": "Welcome",
        "source": "granted",
        "amount": {"amount": 5000, "currency": "USD"},
        "balance": {"amount": 5000, "currency": "USD"},
        "priority": 10,
        "expires_at": "2027-01-01T00:00:00Z",
        "available": True,
        "available_at": "2026-11-02T09:00:00Z",
        "voided": False,
        "voided_at": None,
        "invoice": None,
        "created_at": "2026-11-02T09:00:00Z",
    }


@time_machine.travel(NOV_2, tick=False)
def test_the_customer_credits_show_wallets_grants_and_entries(api, project, customer):
    grant = _grant(customer, "50.00")
    invoice = invoice_with_credits(customer, [(grant, "12.34")])
    wallet_threshold_set(customer=customer, currency="USD", low_balance_threshold=D("10.00"), actor=None)
    purchase = credits_purchase(customer=customer, currency="USD", amount=D("100"), actor=None)

    response = api.get(f"/v1/customers/{customer.external_id}/credits")

    assert response.status_code == 200
    [wallet] = response.json()["results"]
    assert wallet["id"] == grant.wallet.public_id
    assert wallet["balance"] == {"amount": 3766, "currency": "USD"}
    assert wallet["low_balance_threshold"] == {"amount": 1000, "currency": "USD"}
    assert [(g["id"], g["balance"]["amount"], g["available"]) for g in wallet["grants"]] == [
        (grant.public_id, 3766, True),
        (purchase.public_id, 0, False),
    ]
    assert wallet["grants"][1]["invoice"] == purchase.invoice.public_id
    assert wallet["entries"] == [
        {"grant": grant.public_id, "kind": "applied", "amount": {"amount": -1234, "currency": "USD"},
         "invoice": invoice.public_id, "created_at": "2026-11-02T09:00:00Z"},
        {"grant": grant.public_id, "kind": "grant", "amount": {"amount": 5000, "currency": "USD"},
         "invoice": None, "created_at": "2026-11-02T09:00:00Z"},
    ]  # fmt: skip


def test_purchasing_through_the_api_issues_an_invoice(api, project, customer):
    response = api.post(
        f"/v1/customers/{customer.public_id}/credits",
        {"type": "purchase", "currency": "JPY", "amount": 10000, "price": 9000},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    invoice = Invoice.objects.get(public_id=body["invoice"])
    assert (body["source"], body["available"], body["amount"]) == (
        "purchased",
        False,
        {"amount": 10000, "currency": "JPY"},
    )
    assert (invoice.total, invoice.currency, invoice.status) == (D("9000"), "JPY", InvoiceStatus.OPEN)
    shown = api.get(f"/v1/invoices/{invoice.public_id}").json()
    assert (shown["subscription"], shown["billing_reason"]) == (None, "credit_purchase")


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"type": "gift", "currency": "USD", "amount": 1}, 400, "invalid_choice", "type"),
        ({"type": "grant", "currency": "usd", "amount": 1}, 400, "invalid_currency", "currency"),
        ({"type": "grant", "currency": "DEM", "amount": 1}, 400, "invalid_currency", "currency"),
        ({"type": "grant", "currency": "USD", "amount": 0}, 400, "min_value", "amount"),
        ({"type": "grant", "currency": "USD", "amount": 1.5}, 400, "invalid_type", "amount"),
        ({"type": "grant", "currency": "USD", "amount": 1, "priority": 101}, 400, "max_value", "priority"),
        ({"type": "grant", "currency": "USD", "amount": 1, "bonus": 1}, 400, "unknown_field", "bonus"),
        ({"type": "grant", "currency": "USD", "amount": 1, "price": 1}, 422, "price_not_for_grant", "price"),
        (
            {"type": "grant", "currency": "USD", "amount": 1, "expires_at": "2020-01-01T00:00:00Z"},
            422,
            "expires_in_past",
            "expires_at",
        ),
    ],
)
def test_refusals_are_exact_and_change_nothing(api, project, customer, body, status, code, param):
    response = api.post(f"/v1/customers/{customer.public_id}/credits", body, format="json")

    assert response.status_code == status, response.json()
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, param)
    assert not Wallet.objects.exists()
    assert not CreditGrant.objects.exists()
    assert not Invoice.objects.exists()
    assert not Event.objects.filter(type__startswith="credits.").exists()


def test_voiding_through_the_api(api, customer):
    grant = _grant(customer, "50.00")

    response = api.post(f"/v1/credit-grants/{grant.public_id}/void")
    again = api.post(f"/v1/credit-grants/{grant.public_id}/void")

    assert response.status_code == 200
    assert (response.json()["voided"], response.json()["balance"]) == (True, {"amount": 0, "currency": "USD"})
    assert (again.status_code, again.json()["error"]["code"]) == (422, "already_voided")


def test_voiding_an_unpaid_purchase_grant_is_refused(api, customer):
    grant = credits_purchase(customer=customer, currency="USD", amount=D("10"), actor=None)

    response = api.post(f"/v1/credit-grants/{grant.public_id}/void")

    assert (response.status_code, response.json()["error"]["code"]) == (422, "purchase_unpaid")
    grant.refresh_from_db()
    assert grant.voided_at is None


def test_setting_the_threshold(api, customer):
    response = api.patch(
        f"/v1/customers/{customer.public_id}/credits/EUR", {"low_balance_threshold": 2500}, format="json"
    )
    cleared = api.patch(
        f"/v1/customers/{customer.public_id}/credits/EUR", {"low_balance_threshold": None}, format="json"
    )
    unknown = api.patch(
        f"/v1/customers/{customer.public_id}/credits/XYZ", {"low_balance_threshold": 1}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["low_balance_threshold"] == {"amount": 2500, "currency": "EUR"}
    assert response.json()["balance"] == {"amount": 0, "currency": "EUR"}
    assert cleared.json()["low_balance_threshold"] is None
    assert Wallet.objects.get().low_balance_threshold is None
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")


def test_another_projects_customer_and_grant_are_not_found(api, other_project):
    theirs = CustomerFactory(project=other_project)
    grant = _grant(theirs, "10.00")

    assert api.get(f"/v1/customers/{theirs.public_id}/credits").status_code == 404
    assert api.post(f"/v1/credit-grants/{grant.public_id}/void").status_code == 404
    assert credits.grant_balance(grant) == D("10.00")


# --- concurrency (PostgreSQL) -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_invoices_applying_one_grant_never_overdraw_it(project):
    """Two 40.00 invoices issued at once against a 50.00 grant: the wallet lock makes the second
    find what the first left (10.00) and take only that."""
    from tests.concurrency import all_at_once

    customer = CustomerFactory(project=project)
    grant = _grant(customer, "50.00")
    claimed = iter([draft_invoice(project, total="40.00", customer=customer) for _ in range(2)])

    def issue():
        with transaction.atomic():
            invoice = Invoice.objects.select_for_update().get(pk=next(claimed).pk)
            return invoice_issue(invoice=invoice, actor=None).credits_applied

    taken = all_at_once(issue, 2)

    assert sorted(taken) == [D("10.00"), D("40.00")]
    assert credits.grant_balance(grant) == 0
