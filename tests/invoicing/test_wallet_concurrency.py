"""A customer deleted while their first wallet is created, on PostgreSQL with real concurrent
connections: one of the two wins and the other is refused, never a wallet pointing at no customer
(PostgreSQL checks that foreign key only at commit, which was a 500)."""

from decimal import Decimal

import pytest

from billing_site.errors import DomainError
from catalog.models import Customer
from catalog.services import customer_delete
from invoicing.credits import wallet_threshold_set
from invoicing.models import Wallet
from tests.catalog.factories import CustomerFactory
from tests.concurrency import all_at_once

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 8


@pytest.mark.parametrize("attempt", range(ROUNDS))
def test_deleting_a_customer_and_creating_their_wallet_at_once_leaves_one_or_the_other(project, attempt):
    customer = CustomerFactory(project=project)
    work = [
        lambda: customer_delete(customer=customer, actor=None),
        lambda: wallet_threshold_set(
            customer=customer, currency="USD", low_balance_threshold=Decimal(10), actor=None
        ),
    ]

    def one():
        try:
            work.pop()()
        except DomainError as error:
            return error.code
        return "done"

    results = sorted(all_at_once(one, 2))

    deleted = not Customer.objects.filter(pk=customer.pk).exists()
    has_wallet = Wallet.objects.filter(customer_id=customer.pk).exists()
    assert deleted != has_wallet
    assert results == ["done", "in_use" if has_wallet else "not_found"]
