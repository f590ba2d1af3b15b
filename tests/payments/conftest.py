import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import stripe
from django.conf import settings as django_settings
from django_q.conf import Conf

from accounts.models import PaymentProcessor
from payments import stripe_processor
from payments.models import PaymentMethod
from tests.accounts.factories import ProjectFactory
from tests.webhooks.conftest import receiver  # noqa: F401 - the real local receiver, shared

WEBHOOK_SECRET = "whsec_billable_test"


@pytest.fixture(scope="session")
def localstripe_url():
    """A localstripe server of this test session on a free loopback port (tests/payments/
    localstripe_server.py: no disk, Idempotency-Key honoured as Stripe does)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [sys.executable, "-m", "tests.payments.localstripe_server", str(port)],
        cwd=Path(django_settings.BASE_DIR),
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("localstripe did not start")
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def stripe_project(db, settings, localstripe_url):
    """A project collecting through Stripe, pointed at localstripe."""
    settings.STRIPE_API_BASE = localstripe_url
    return ProjectFactory(
        name="Stripe Co",
        invoice_number_prefix="STR",
        payment_processor=PaymentProcessor.STRIPE,
        stripe_secret_key="sk_test_billable",
        stripe_publishable_key="pk_test_billable",
        stripe_webhook_secret=WEBHOOK_SECRET,
    )


def stripe_card(project, number: str = "4242424242424242"):
    """A card payment method created at (local)Stripe, as Stripe.js would have created it.
    4000000000000341 attaches but every charge is declined."""
    return stripe_processor.client(project).v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )


def stripe_webhook(client, project, event_type: str, obj: dict, *, event_id: str | None = None, secret=None):
    """POST a Stripe event to the project's webhook route, signed with Stripe's own helper."""
    event = {
        "id": event_id or f"evt_{time.time_ns()}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": dict(obj)},
    }
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret or WEBHOOK_SECRET)
    return client.post(
        f"/webhooks/stripe/{project.public_id}/",
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )


@pytest.fixture(autouse=True)
def _django_q_sync(monkeypatch):
    """Tasks queued with async_task run inline, as DESIGN.md §6 says tests run them."""
    monkeypatch.setattr(Conf, "SYNC", True)


def saved_card(customer, number: str = "4242424242424242", *, default: bool = True) -> PaymentMethod:
    """A card attached at (local)Stripe to the customer and saved as theirs (the default unless
    told otherwise), as the payment-method flow leaves it."""
    project = customer.project
    stripe_customer = stripe_processor.customer_ensure(customer)
    card = stripe_card(project, number)
    stripe_processor.client(project).v1.payment_methods.attach(card.id, params={"customer": stripe_customer})
    if default:
        PaymentMethod.objects.filter(customer=customer, is_default=True).update(is_default=False)
    return PaymentMethod.objects.create(
        project=project, customer=customer, processor_id=card.id, type="card", brand="visa",
        last4=number[-4:], exp_month=12, exp_year=2034, is_default=default,
    )  # fmt: skip


def stripe_charges(customer) -> list[dict]:
    """The charges (local)Stripe made of the customer, oldest first."""
    charges = stripe_processor.client(customer.project).v1.charges.list(
        params={"customer": customer.processor_customer_id, "limit": 100}
    )
    return sorted((stripe_processor.plain(charge) for charge in charges.data), key=lambda c: c["created"])
