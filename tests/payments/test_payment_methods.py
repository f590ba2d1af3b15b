"""Saved payment methods through the API, against localstripe (a real fake Stripe server)."""

import threading

import pytest
from django.db import connection

from accounts.models import AuditLogEntry, PaymentProcessor, Scope
from catalog.models import Customer
from payments import stripe_processor
from payments.methods import (
    payment_method_attach,
    payment_method_detach,
    payment_method_set_default,
    payment_method_sync,
)
from payments.models import PaymentMethod
from payments.selectors import default_payment_method
from tests.catalog.factories import CustomerFactory
from tests.conftest import api_client
from tests.payments.conftest import stripe_card
from webhooks.models import Event

pytestmark = pytest.mark.django_db

DECLINED_ON_ATTACH = "4000000000000002"
MASTERCARD = "5555555555554444"


@pytest.fixture
def customer(stripe_project):
    return CustomerFactory(project=stripe_project, external_id="easybill-42", name="EasyBill GmbH")


@pytest.fixture
def api(stripe_project):
    return api_client(stripe_project)


def _methods_url(customer: Customer, *rest: str) -> str:
    return "/".join([f"/v1/customers/{customer.public_id}/payment-methods", *rest])


def _listed(api, customer: Customer) -> list[tuple]:
    response = api.get(_methods_url(customer))
    assert response.status_code == 200
    return [
        (m["processor_id"], m["default"], m["brand"], m["last4"], m["exp_month"], m["exp_year"])
        for m in response.json()["results"]
    ]


def _stripe_default(customer: Customer) -> str | None:
    customer.refresh_from_db()
    stripe_customer = stripe_processor.client(customer.project).v1.customers.retrieve(
        customer.processor_customer_id
    )
    return stripe_customer["invoice_settings"]["default_payment_method"]


def _event_types() -> list[str]:
    return list(
        Event.objects.filter(type__startswith="payment_method.").order_by("pk").values_list("type", flat=True)
    )


def test_easybills_flow_setup_intent_attach_default_and_remove(api, stripe_project, customer):
    # Given a SetupIntent, confirmed by Stripe.js with the card the customer typed in
    setup = api.post(_methods_url(customer, "setup-intent"))
    assert setup.status_code == 200
    secret = setup.json()["client_secret"]
    assert secret.startswith("seti_")
    assert setup.json()["publishable_key"] == "pk_test_billable"
    card = stripe_card(stripe_project)
    confirmed = stripe_processor.client(stripe_project).v1.setup_intents.confirm(
        secret.split("_secret_")[0], params={"payment_method": card.id}
    )
    assert confirmed.status == "succeeded"

    # When the card is saved
    attached = api.post(_methods_url(customer), {"payment_method_id": card.id}, format="json")

    # Then it is the customer's default, here and at Stripe
    assert attached.status_code == 201
    body = attached.json()
    assert body["id"].startswith("pmt_")
    assert {name: value for name, value in body.items() if name not in {"id", "created_at"}} == {
        "customer": customer.public_id,
        "processor_id": card.id,
        "type": "card",
        "default": True,
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2034,
        "iban_last4": None,
    }
    assert _listed(api, customer) == [(card.id, True, "visa", "4242", 12, 2034)]
    assert _stripe_default(customer) == card.id

    # When a second card is saved and made the default (named by Stripe's ID)
    second = stripe_card(stripe_project, MASTERCARD)
    assert (
        api.post(_methods_url(customer), {"payment_method_id": second.id}, format="json").json()["default"]
        is False
    )
    made_default = api.post(_methods_url(customer, second.id, "default"))

    # Then it is listed first, and Stripe's default follows
    assert (made_default.status_code, made_default.json()["default"]) == (200, True)
    assert _listed(api, customer) == [
        (second.id, True, "visa", "4444", 12, 2034),
        (card.id, False, "visa", "4242", 12, 2034),
    ]
    assert _stripe_default(customer) == second.id

    # When the default is removed (named by our ID)
    removed_id = made_default.json()["id"]
    removed = api.delete(_methods_url(customer, removed_id))

    # Then the other card is the default again; the removed one is kept, detached
    assert removed.status_code == 204
    assert _listed(api, customer) == [(card.id, True, "visa", "4242", 12, 2034)]
    assert _stripe_default(customer) == card.id
    assert stripe_processor.client(stripe_project).v1.payment_methods.retrieve(second.id).customer is None
    kept = PaymentMethod.objects.get(public_id=removed_id)
    assert (kept.detached_at is not None, kept.is_default) == (True, False)
    assert _event_types() == [
        "payment_method.attached",
        "payment_method.attached",
        "payment_method.updated",  # the first card stops being the default
        "payment_method.updated",  # the second becomes it
        "payment_method.detached",
        "payment_method.updated",  # the first card is the default again
    ]
    assert Event.objects.filter(type="payment_method.detached").get().data["id"] == removed_id


def test_a_sepa_debit_shows_the_ibans_last_four(api, stripe_project, customer):
    sepa = stripe_processor.client(stripe_project).v1.payment_methods.create(
        params={"type": "sepa_debit", "sepa_debit": {"iban": "DE89370400440532013000"}}
    )

    body = api.post(_methods_url(customer), {"payment_method_id": sepa.id}, format="json").json()

    assert {
        name: body[name] for name in ("type", "brand", "last4", "exp_month", "exp_year", "iban_last4")
    } == {
        "type": "sepa_debit",
        "brand": None,
        "last4": None,
        "exp_month": None,
        "exp_year": None,
        "iban_last4": "3000",
    }


def test_a_read_only_key_lists_but_cannot_write(stripe_project, customer):
    method = payment_method_attach(
        customer=customer, payment_method_id=stripe_card(stripe_project).id, actor=None
    )
    reader = api_client(stripe_project, [Scope.BILLING_READ])
    events_before = Event.objects.count()

    refused = [
        reader.post(_methods_url(customer, "setup-intent")),
        reader.post(
            _methods_url(customer), {"payment_method_id": stripe_card(stripe_project).id}, format="json"
        ),
        reader.post(_methods_url(customer, method.public_id, "default")),
        reader.delete(_methods_url(customer, method.public_id)),
    ]

    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [(403, "insufficient_scope")] * 4
    assert _listed(reader, customer) == [(method.processor_id, True, "visa", "4242", 12, 2034)]
    assert PaymentMethod.objects.filter(detached_at__isnull=True).count() == 1
    assert Event.objects.count() == events_before


def test_another_projects_customer_and_method_are_not_found(api, stripe_project, customer, other_project):
    theirs = CustomerFactory(project=other_project, processor_customer_id="cus_theirs")
    their_method = payment_method_sync(
        project=other_project,
        stripe_pm={**stripe_processor.plain(stripe_card(stripe_project)), "customer": "cus_theirs"},
        attached=True,
    )
    card = stripe_card(stripe_project).id

    answers = [
        api.get(_methods_url(theirs)),
        api.post(_methods_url(theirs, "setup-intent")),
        api.post(_methods_url(theirs), {"payment_method_id": card}, format="json"),
        api.post(_methods_url(theirs, their_method.public_id, "default")),
        api.delete(_methods_url(theirs, their_method.public_id)),
        # their method below our own customer
        api.post(_methods_url(customer, their_method.public_id, "default")),
        api.delete(_methods_url(customer, their_method.processor_id)),
    ]

    assert [(r.status_code, r.json()["error"]["code"]) for r in answers] == [(404, "not_found")] * 7
    their_method.refresh_from_db()
    assert (their_method.detached_at, their_method.is_default) == (None, True)
    assert PaymentMethod.objects.count() == 1


def test_a_declined_card_is_refused_with_stripes_code_and_nothing_is_stored(api, stripe_project, customer):
    declined = stripe_card(stripe_project, DECLINED_ON_ATTACH)

    response = api.post(_methods_url(customer), {"payment_method_id": declined.id}, format="json")

    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["message"], error["param"]) == (
        "card_declined",
        "Your card was declined.",
        None,
    )
    assert PaymentMethod.objects.count() == 0
    assert _event_types() == []
    assert not AuditLogEntry.objects.filter(action__startswith="payment_method.").exists()


@pytest.mark.parametrize(
    ("payment_method_id", "status", "code"),
    [
        ("pm_unknown123", 422, "unknown_payment_method"),
        ("card_1PqRsT2eZvKYlo2C", 400, "invalid_payment_method_id"),
        ("pm_\n", 400, "invalid_payment_method_id"),
    ],
)
def test_an_id_stripe_does_not_know_or_of_another_shape_is_refused(
    api, customer, payment_method_id, status, code
):
    response = api.post(_methods_url(customer), {"payment_method_id": payment_method_id}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert response.json()["error"]["param"] == "payment_method_id"
    assert PaymentMethod.objects.count() == 0


@pytest.mark.parametrize(("reference", "status"), [("%00", 400), ("%ED%A0%80", 404), ("x" * 5000, 404)])
def test_a_hostile_payment_method_in_the_path_is_refused(api, stripe_project, customer, reference, status):
    method = payment_method_attach(
        customer=customer, payment_method_id=stripe_card(stripe_project).id, actor=None
    )
    events_before = Event.objects.count()

    answers = [
        api.post(_methods_url(customer, reference, "default")),
        api.delete(_methods_url(customer, reference)),
    ]

    assert [r.status_code for r in answers] == [status, status]
    assert all("error" in r.json() for r in answers)
    method.refresh_from_db()
    assert (method.detached_at, method.is_default, Event.objects.count()) == (None, True, events_before)


def test_a_project_without_stripe_cannot_save_methods(api, stripe_project, customer):
    card = stripe_card(stripe_project).id
    stripe_project.payment_processor = PaymentProcessor.MANUAL
    stripe_project.save()
    manual = [
        api.post(_methods_url(customer, "setup-intent")),
        api.post(_methods_url(customer), {"payment_method_id": card}, format="json"),
    ]
    stripe_project.payment_processor, stripe_project.stripe_secret_key = PaymentProcessor.STRIPE, ""
    stripe_project.save()
    keyless = api.post(_methods_url(customer), {"payment_method_id": card}, format="json")

    assert [(r.status_code, r.json()["error"]["code"]) for r in [*manual, keyless]] == [
        (422, "processor_not_configured")
    ] * 3
    assert PaymentMethod.objects.count() == 0


def test_saving_the_same_method_again_returns_it_and_a_removed_one_comes_back(api, stripe_project, customer):
    card = stripe_card(stripe_project).id
    first = api.post(_methods_url(customer), {"payment_method_id": card}, format="json").json()

    again = api.post(_methods_url(customer), {"payment_method_id": card}, format="json").json()
    assert again == first
    assert api.delete(_methods_url(customer, card)).status_code == 204
    revived = api.post(_methods_url(customer), {"payment_method_id": card}, format="json").json()

    assert (revived["id"], revived["default"]) == (first["id"], True)
    assert _listed(api, customer) == [(card, True, "visa", "4242", 12, 2034)]
    assert _event_types() == ["payment_method.attached", "payment_method.detached", "payment_method.attached"]


def test_a_method_saved_for_another_customer_is_refused(api, stripe_project, customer):
    card = stripe_card(stripe_project).id
    payment_method_attach(
        customer=CustomerFactory(project=stripe_project), payment_method_id=card, actor=None
    )

    response = api.post(_methods_url(customer), {"payment_method_id": card}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (422, "payment_method_in_use")
    assert PaymentMethod.objects.get().customer != customer


def test_removing_twice_does_nothing_the_second_time(api, stripe_project, customer):
    method = payment_method_attach(
        customer=customer, payment_method_id=stripe_card(stripe_project).id, actor=None
    )

    detached = payment_method_detach(payment_method=method, actor=None)
    again = payment_method_detach(payment_method=detached, actor=None)
    by_api = api.delete(_methods_url(customer, method.public_id))

    assert again.detached_at == detached.detached_at
    assert by_api.status_code == 204
    assert _event_types() == ["payment_method.attached", "payment_method.detached"]
    assert default_payment_method(customer) is None
    assert _stripe_default(customer) is None


def test_a_removed_method_cannot_become_the_default(api, stripe_project, customer):
    method = payment_method_attach(
        customer=customer, payment_method_id=stripe_card(stripe_project).id, actor=None
    )
    payment_method_detach(payment_method=method, actor=None)

    response = api.post(_methods_url(customer, method.public_id, "default"))

    assert (response.status_code, response.json()["error"]["code"]) == (422, "payment_method_detached")


def test_making_the_default_the_default_again_records_nothing(api, stripe_project, customer):
    method = payment_method_attach(
        customer=customer, payment_method_id=stripe_card(stripe_project).id, actor=None
    )

    response = api.post(_methods_url(customer, method.public_id, "default"))

    assert (response.status_code, response.json()["default"]) == (200, True)
    assert _event_types() == ["payment_method.attached"]


def test_webhook_sync_saves_and_detaches_once(stripe_project, customer):
    stripe_customer = stripe_processor.customer_ensure(customer)
    card = stripe_card(stripe_project)
    stripe_processor.client(stripe_project).v1.payment_methods.attach(
        card.id, params={"customer": stripe_customer}
    )
    stripe_pm = stripe_processor.plain(
        stripe_processor.client(stripe_project).v1.payment_methods.retrieve(card.id)
    )

    saved = payment_method_sync(project=stripe_project, stripe_pm=stripe_pm, attached=True)
    saved_again = payment_method_sync(project=stripe_project, stripe_pm=stripe_pm, attached=True)
    detached_pm = {**stripe_pm, "customer": None}
    detached = payment_method_sync(project=stripe_project, stripe_pm=detached_pm, attached=False)
    detached_again = payment_method_sync(project=stripe_project, stripe_pm=detached_pm, attached=False)

    assert saved_again.pk == saved.pk == detached.pk == detached_again.pk
    assert (saved.customer, saved.type, saved.brand, saved.last4, saved.is_default) == (
        customer, "card", "visa", "4242", True,
    )  # fmt: skip
    assert (detached_again.detached_at, detached_again.is_default) == (detached.detached_at, False)
    assert _event_types() == ["payment_method.attached", "payment_method.detached"]
    assert AuditLogEntry.objects.get(action="payment_method.attached").actor_label == "system"


def test_webhook_sync_ignores_customers_and_methods_it_does_not_know(stripe_project, customer):
    stripe_pm = {**stripe_processor.plain(stripe_card(stripe_project)), "customer": "cus_unknown"}

    assert payment_method_sync(project=stripe_project, stripe_pm=stripe_pm, attached=True) is None
    assert payment_method_sync(project=stripe_project, stripe_pm=stripe_pm, attached=False) is None
    assert PaymentMethod.objects.count() == 0
    assert _event_types() == []


def test_webhook_detaching_the_default_hands_it_to_the_most_recent_other(stripe_project, customer):
    oldest, default, newest = (
        payment_method_attach(customer=customer, payment_method_id=stripe_card(stripe_project).id, actor=None)
        for _ in range(3)
    )
    default = payment_method_set_default(payment_method=default, actor=None)

    payment_method_sync(
        project=stripe_project, stripe_pm={"id": default.processor_id, "customer": None}, attached=False
    )

    assert default_payment_method(customer) == newest
    assert oldest.pk != newest.pk


def test_a_customer_with_payment_methods_cannot_be_deleted(api, stripe_project, customer):
    method = payment_method_attach(
        customer=customer, payment_method_id=stripe_card(stripe_project).id, actor=None
    )
    payment_method_detach(payment_method=method, actor=None)

    response = api.delete(f"/v1/customers/{customer.public_id}")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "in_use")
    assert "payment methods" in response.json()["error"]["message"]
    assert Customer.objects.filter(pk=customer.pk).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_first_methods_saved_at_once_make_one_default(stripe_project, customer):
    cards = [stripe_card(stripe_project).id for _ in range(2)]
    stripe_processor.customer_ensure(customer)
    barrier = threading.Barrier(2)
    failures = []

    def attach(card: str) -> None:
        try:
            barrier.wait()
            payment_method_attach(
                customer=Customer.objects.get(pk=customer.pk), payment_method_id=card, actor=None
            )
        except Exception as error:  # reported below, with the thread's traceback lost
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=attach, args=(card,)) for card in cards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sorted(PaymentMethod.objects.values_list("is_default", flat=True)) == [False, True]


def test_webhook_sync_reads_only_its_projects_methods(stripe_project, customer, other_project):
    card = stripe_card(stripe_project).id
    payment_method_attach(customer=customer, payment_method_id=card, actor=None)

    assert (
        payment_method_sync(project=other_project, stripe_pm={"id": card, "customer": None}, attached=False)
        is None
    )
    assert PaymentMethod.objects.get().detached_at is None
