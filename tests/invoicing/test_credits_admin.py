"""The wallets' back office: balance, grants and ledger read-only; "Grant credits…" for
billing_admin and owner, refused to a viewer."""

from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Role
from invoicing.credits import credits_grant
from invoicing.models import CreditEntry, CreditGrant, Wallet
from tests.accounts.factories import MembershipFactory
from tests.catalog.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _login(client, project, role):
    user = MembershipFactory(project=project, role=role).user
    client.force_login(user)


@pytest.fixture
def wallet(project) -> Wallet:
    grant = credits_grant(
        customer=CustomerFactory(project=project), currency="USD", amount=Decimal("50"), actor=None
    )
    return grant.wallet


def test_the_wallet_page_shows_balance_and_ledger_and_the_button(client, project, wallet):
    _login(client, project, Role.BILLING_ADMIN)

    page = client.get(reverse("admin:invoicing_wallet_change", args=[wallet.pk]))

    assert page.status_code == 200
    assert "$50.00" in page.content.decode()
    assert "Grant credits…" in page.content.decode()


def test_billing_admin_grants_credits(client, project, wallet):
    _login(client, project, Role.BILLING_ADMIN)

    response = client.post(
        reverse("admin:invoicing_wallet_grant", args=[wallet.pk]),
        {"amount": "12.50", "priority": "5", "name": "Goodwill"},
    )

    assert response.status_code == 302
    grant = CreditGrant.objects.get(name="Goodwill")
    assert (grant.wallet, grant.amount, grant.priority) == (wallet, Decimal("12.50"), 5)


def test_a_too_precise_amount_is_shown_on_the_form(client, project, wallet):
    _login(client, project, Role.BILLING_ADMIN)

    response = client.post(
        reverse("admin:invoicing_wallet_grant", args=[wallet.pk]), {"amount": "1.005", "priority": "5"}
    )

    assert response.status_code == 200
    assert "USD amounts have at most 2 decimal places." in response.content.decode()
    assert CreditGrant.objects.count() == 1


def test_a_viewer_reads_but_cannot_grant(client, project, wallet):
    _login(client, project, Role.VIEWER)

    page = client.get(reverse("admin:invoicing_wallet_change", args=[wallet.pk]))
    refused = client.post(
        reverse("admin:invoicing_wallet_grant", args=[wallet.pk]), {"amount": "1", "priority": "5"}
    )

    assert page.status_code == 200
    assert "Grant credits…" not in page.content.decode()
    assert refused.status_code == 403
    assert CreditGrant.objects.count() == 1


def test_ledger_entries_are_never_edited_or_deleted(client, project, wallet):
    _login(client, project, Role.OWNER)
    grant = CreditGrant.objects.get()

    assert (
        client.post(
            reverse("admin:invoicing_creditgrant_delete", args=[grant.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert (
        client.post(reverse("admin:invoicing_wallet_delete", args=[wallet.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert CreditEntry.objects.count() == 1
